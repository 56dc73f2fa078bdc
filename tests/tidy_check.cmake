# Fails when a source of the project breaks a rule of the checked-in .clang-tidy (the brace
# rule: every if/else/for/while/do body is a braced block; clang-format 14 cannot insert them).
# Run by CTest as `clang_tidy`: cmake -DBUILD_DIR=<build> -P tidy_check.cmake
# Checks every translation unit of the build's compile_commands.json and the project headers
# they include. To fix: run-clang-tidy -p <build> -fix, then clang-format -i on the files.
find_program(RUN_CLANG_TIDY NAMES run-clang-tidy run-clang-tidy-14 REQUIRED)
execute_process(COMMAND ${RUN_CLANG_TIDY} -p ${BUILD_DIR} -quiet -j 2
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  # Keep only the findings, not clang-tidy's counts of suppressed warnings.
  string(REGEX MATCHALL "[^\n]*(warning|error): [^\n]*" findings "${out}\n${err}")
  list(JOIN findings "\n" findings)
  message(FATAL_ERROR "clang-tidy found rule violations (see .clang-tidy):\n${findings}")
endif()
message(STATUS "every translation unit follows .clang-tidy")
