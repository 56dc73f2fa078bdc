# Compiler flags for the project's own code. Third-party headers come from /usr/include and
# are treated as system headers, so -Werror applies to our code only.
add_compile_options(-Wall -Wextra -Werror)
# Boost.DLL: use std::filesystem so no boost_filesystem library is linked.
add_compile_definitions(BOOST_DLL_USE_STD_FS)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)

if(UPPARAT_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
  add_compile_definitions(UPPARAT_SANITIZE=1)
endif()
