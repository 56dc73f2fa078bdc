# upparat_add_plugin(<target> SOURCES <file>... [LIBRARIES <lib>...] [INSTALL])
#
# Builds an Upparat plugin: a MODULE library without the "lib" prefix, with hidden visibility,
# exporting only upparat_plugin_entry (the linker version script UPPARAT_PLUGIN_MAP) and no
# unresolved symbols (-Wl,--no-undefined). INSTALL adds an install rule into the daemon's plugin
# folder under the install prefix (UPPARAT_PLUGIN_INSTALL_DIR, <libdir>/upparat/plugins), where
# the daemon finds a plugin named by its file name.
#
# Used by the daemon's own build and by the installed SDK package (UpparatPluginSdkConfig.cmake),
# which sets UPPARAT_PLUGIN_MAP and UPPARAT_PLUGIN_INSTALL_DIR and defines Upparat::plugin-api.
function(upparat_add_plugin target)
  cmake_parse_arguments(ARG "INSTALL" "" "SOURCES;LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "upparat_add_plugin(${target}): SOURCES is required")
  endif()
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE Upparat::plugin-api ${ARG_LIBRARIES})
  set_target_properties(${target} PROPERTIES PREFIX "" C_VISIBILITY_PRESET hidden
                        CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON
                        LINK_DEPENDS ${UPPARAT_PLUGIN_MAP})
  target_link_options(${target} PRIVATE
    "LINKER:--version-script=${UPPARAT_PLUGIN_MAP}"
    "LINKER:--no-undefined")
  if(ARG_INSTALL)
    install(TARGETS ${target} LIBRARY DESTINATION ${UPPARAT_PLUGIN_INSTALL_DIR})
  endif()
endfunction()
