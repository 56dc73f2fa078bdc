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
  ${LIBDIR}/upparat/plugins/upparat-rauc.so
  share/upparat/rauc.toml
  share/upparat/50-upparat-reboot.rules
  ${LIBDIR}/upparat/plugins/upparat-swupdate.so
  share/upparat/swupdate/upparat-swupdate.conf
  etc/upparat/upparat.toml
  lib/systemd/system/upparat.service
  share/upparat/hooks/install.sh
  share/doc/upparat/docs/plugin-api.md)
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
execute_process(COMMAND "${PREFIX}/bin/upparat-plugin-check"
                        "${PREFIX}/${LIBDIR}/upparat/plugins/upparat-rauc.so"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT out MATCHES "rauc")
  message(FATAL_ERROR "installed upparat-plugin-check of the RAUC plugin failed (${rc}): ${out}${err}")
endif()

# The unit starts the daemon of this prefix with the configuration of this prefix.
file(READ "${PREFIX}/lib/systemd/system/upparat.service" unit)
string(FIND "${unit}" "ExecStart=${PREFIX}/sbin/upparat -c ${PREFIX}/etc/upparat/upparat.toml" at)
if(at EQUAL -1)
  message(FATAL_ERROR "the installed unit does not start ${PREFIX}/sbin/upparat with "
                      "${PREFIX}/etc/upparat/upparat.toml:\n${unit}")
endif()

# A second install keeps a configuration the integrator edited.
file(APPEND "${PREFIX}/etc/upparat/upparat.toml" "# edited by the integrator\n")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
file(READ "${PREFIX}/etc/upparat/upparat.toml" config)
if(NOT rc EQUAL 0 OR NOT config MATCHES "edited by the integrator")
  message(FATAL_ERROR "a second cmake --install replaced the edited configuration (${rc}):\n${out}")
endif()

# A Python Upparat INI file names no plugin path: the installed daemon finds the installed
# script plugin in its own prefix, whatever the prefix (no UPPARAT_PLUGIN_DIR).
file(MAKE_DIRECTORY "${PREFIX}/data")
file(WRITE "${PREFIX}/upparat.ini"
     "[service]\ndownload_location = ${PREFIX}/data\n[broker]\nthing_name = device-1\n"
     "[hooks]\nversion = ${PREFIX}/share/upparat/hooks/install.sh\n")
execute_process(COMMAND "${CMAKE_COMMAND}" -E env --unset=UPPARAT_PLUGIN_DIR
                        "${PREFIX}/sbin/upparat" -c "${PREFIX}/upparat.ini" --check-config
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(plugin "${PREFIX}/${LIBDIR}/upparat/plugins/upparat-script.so")
string(FIND "${out}${err}" "(${plugin})" at)
if(NOT rc EQUAL 0 OR at EQUAL -1)
  message(FATAL_ERROR "installed upparat --check-config of an INI file did not use ${plugin} "
                      "(${rc}):\n${out}${err}")
endif()
file(REMOVE_RECURSE "${PREFIX}")
message(STATUS "install layout OK")
