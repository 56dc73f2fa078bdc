# Fails when a library's link closure holds a forbidden item. Run by CTest (tests registered
# with upparat_add_link_check in tests/CMakeLists.txt): cmake -DCLOSURE_FILE=<file> -P
# link_check.cmake. The file, written at configure time, sets TARGET, LINKS (one entry per
# item: the chain of links that brings it in) and FORBIDDEN (regular expressions matched
# against the item's lower-cased name).
include(${CLOSURE_FILE})
set(found "")
foreach(chain IN LISTS LINKS)
  string(REGEX REPLACE "^.* -> " "" item "${chain}")
  string(TOLOWER "${item}" lower)
  foreach(pattern IN LISTS FORBIDDEN)
    if(lower MATCHES "${pattern}")
      string(APPEND found "  ${item} (${chain})\n")
      break()
    endif()
  endforeach()
endforeach()
if(found)
  message(FATAL_ERROR "${TARGET} must not link these libraries; remove the link (or the "
                      "dependency that brings it in):\n${found}")
endif()
list(LENGTH LINKS count)
message(STATUS "${TARGET} links ${count} items, none of them forbidden")
