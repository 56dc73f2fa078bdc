# cmake -DNM=<nm> -DPLUGIN=<plugin.so> -P check_exports.cmake
# Fails unless the plugin's dynamic symbol table defines exactly one symbol, the entry point
# (upparat_add_plugin: hidden visibility and the version script plugin-api/plugin.map).
execute_process(COMMAND ${NM} -D --defined-only ${PLUGIN} OUTPUT_VARIABLE out
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${NM} failed on ${PLUGIN}")
endif()
string(REGEX MATCHALL "[^\n]+" lines "${out}")
set(symbols "")
foreach(line ${lines})
  string(REGEX REPLACE "^.* " "" symbol "${line}")
  list(APPEND symbols ${symbol})
endforeach()
if(NOT symbols STREQUAL "upparat_plugin_entry")
  message(FATAL_ERROR "${PLUGIN} exports '${symbols}', expected only upparat_plugin_entry")
endif()
message(STATUS "${PLUGIN} exports only upparat_plugin_entry")
