# Installs the example configuration and the systemd unit with the paths of the prefix given to
# `cmake --install` (not the one configured): <prefix>/sbin/upparat and <prefix>/etc/upparat,
# or /etc/upparat for the /usr prefix of a distribution package. An existing configuration is
# kept: a reinstall never overwrites what an integrator edited. Run at install time (install(SCRIPT)),
# with UPPARAT_SOURCE_DIR, UPPARAT_BINARY_DIR and UPPARAT_SBINDIR set by install(CODE).
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(etc "/etc")
else()
  set(etc "${CMAKE_INSTALL_PREFIX}/etc")
endif()
set(sbin "${CMAKE_INSTALL_PREFIX}/${UPPARAT_SBINDIR}")

if(EXISTS "$ENV{DESTDIR}${etc}/upparat/upparat.toml")
  message(STATUS "Keeping: $ENV{DESTDIR}${etc}/upparat/upparat.toml (it exists)")
else()
  file(INSTALL "${UPPARAT_SOURCE_DIR}/config/upparat.toml" DESTINATION "${etc}/upparat")
endif()

# config/upparat.service is written for a /usr install; point it at this prefix.
file(READ "${UPPARAT_SOURCE_DIR}/config/upparat.service" unit)
string(REPLACE "/usr/sbin/upparat" "${sbin}/upparat" unit "${unit}")
string(REPLACE "/etc/upparat/upparat.toml" "${etc}/upparat/upparat.toml" unit "${unit}")
# A folder of this install's own: installs from one build may run at the same time (the tests
# install it and package it in parallel).
string(RANDOM LENGTH 12 tag)
set(unit_dir "${UPPARAT_BINARY_DIR}/install/${tag}")
file(WRITE "${unit_dir}/upparat.service" "${unit}")
file(INSTALL "${unit_dir}/upparat.service" DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
file(REMOVE_RECURSE "${unit_dir}")
