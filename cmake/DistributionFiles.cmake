# upparat_install_distribution_file(<file> DESTINATION <absolute dir> [RENAME <name>])
#
# Installs <file> only when the install prefix is /usr, the layout of a distribution package
# (the .deb of cmake/Packaging.cmake): files that take effect where they land, such as a polkit
# rule or a systemd drop-in, which an install under /usr/local must not switch on by itself.
# Other prefixes get the copies under share/upparat as examples only.
function(upparat_install_distribution_file file)
  cmake_parse_arguments(ARG "" "DESTINATION;RENAME" "" ${ARGN})
  get_filename_component(name "${file}" NAME)
  if(ARG_RENAME)
    set(name "${ARG_RENAME}")
  endif()
  install(CODE "if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
  file(INSTALL \"${file}\" DESTINATION \"${ARG_DESTINATION}\" RENAME \"${name}\")
endif()")
endfunction()
