# Fails when a C or C++ source of the project does not follow the checked-in .clang-format.
# Run by CTest as `clang_format`: cmake -DSOURCE_DIR=<repo> -P format_check.cmake
find_program(CLANG_FORMAT clang-format REQUIRED)
file(GLOB_RECURSE sources
  ${SOURCE_DIR}/host/*.cpp ${SOURCE_DIR}/host/*.hpp
  ${SOURCE_DIR}/plugin-api/*.h ${SOURCE_DIR}/plugin-api/*.hpp
  ${SOURCE_DIR}/plugins/*.cpp ${SOURCE_DIR}/plugins/*.hpp
  ${SOURCE_DIR}/sdk/*.cpp ${SOURCE_DIR}/sdk/*.hpp ${SOURCE_DIR}/sdk/*.h ${SOURCE_DIR}/sdk/*.c
  ${SOURCE_DIR}/tests/*.cpp ${SOURCE_DIR}/tests/*.hpp ${SOURCE_DIR}/tests/*.c
  ${SOURCE_DIR}/bench/*.cpp ${SOURCE_DIR}/fuzz/*.cpp ${SOURCE_DIR}/fuzz/*.hpp)
set(unformatted "")
foreach(file IN LISTS sources)
  execute_process(COMMAND ${CLANG_FORMAT} --dry-run -Werror --style=file ${file}
                  RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
  if(NOT rc EQUAL 0)
    string(APPEND unformatted "  ${file}\n")
  endif()
endforeach()
if(unformatted)
  message(FATAL_ERROR "not formatted with .clang-format (run clang-format -i on them):\n${unformatted}")
endif()
list(LENGTH sources count)
message(STATUS "${count} files follow .clang-format")
