# Installs the build into a fresh prefix and checks that what integrators and vendors rely on
# is there and works from there. Run by CTest as `install_layout`:
#   cmake -DBUILD_DIR=<build> -DPREFIX=<dir> -DLIBDIR=<lib dir> -P install_layout.cmake
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed (${rc}):\n${out}")
endif()

set(expected
  sbin/upparat
  bin/upparat-plugin-check
  bin/upparat-jobs-emulator
  ${LIBDIR}/upparat/plugins/upparat-script.so
  ${LIBDIR}/upparat/plugins/upparat-swupdate.so
  share/upparat/swupdate/upparat-swupdate.conf
  etc/upparat/upparat.toml
  lib/systemd/system/upparat.service
  share/upparat/hooks/install.sh)
foreach(file IN LISTS expected)
  if(NOT EXISTS "${PREFIX}/${file}")
    message(FATAL_ERROR "not installed: ${PREFIX}/${file}\ninstall said:\n${out}")
  endif()
endforeach()

# Nothing may land outside the prefix (an absolute DESTINATION would).
string(REGEX MATCHALL "Installing: [^\n]*" lines "${out}")
foreach(line IN LISTS lines)
  string(REPLACE "Installing: " "" path "${line}")
  string(FIND "${path}" "${PREFIX}/" at)
  if(NOT at EQUAL 0)
    message(FATAL_ERROR "installed outside the prefix: ${path}")
  endif()
endforeach()

# The installed tools work from the prefix: the daemon answers, the plugin checker loads the
# installed plugin through the real loader.
execute_process(COMMAND "${PREFIX}/sbin/upparat" --version RESULT_VARIABLE rc OUTPUT_VARIABLE out)
if(NOT rc EQUAL 0 OR NOT out MATCHES "upparat")
  message(FATAL_ERROR "installed upparat --version failed (${rc}): ${out}")
endif()
execute_process(COMMAND "${PREFIX}/bin/upparat-plugin-check"
                        "${PREFIX}/${LIBDIR}/upparat/plugins/upparat-script.so"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "script")
  message(FATAL_ERROR "installed upparat-plugin-check failed (${rc}): ${out}${err}")
endif()
file(REMOVE_RECURSE "${PREFIX}")
message(STATUS "install layout OK")
