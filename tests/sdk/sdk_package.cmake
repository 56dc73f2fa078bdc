# Builds plugins outside this tree against the SDK installed into a fresh prefix, as a vendor
# would, and loads them with the installed upparat-plugin-check. Run by CTest as `sdk_package`:
#   cmake -DBUILD_DIR=<build> -DWORK=<dir> -DSOURCE_DIR=<repo> -DLIBDIR=<libdir> -DNM=<nm>
#         -P sdk_package.cmake
# 0. Every relative link of the installed docs resolves (doc_links.cmake).
# 1. CMake: find_package(UpparatPluginSdk 1) and upparat_add_plugin(... INSTALL), then
#    cmake --install into the prefix: the plugin lands in the daemon's plugin folder.
# 2. pkg-config: one cc command with --cflags and the plugin_ldflags variable.
# 3. find_package(UpparatPluginSdk 2) is refused (SameMajorVersion).
# 4. The installed template (share/upparat/sdk-template), copied out: it builds, its unit tests
#    (the test kit, GoogleTest) pass, and it installs its plugin into the daemon's folder;
#    it passes the conformance kit; the plugin is left in ${WORK}/template-plugin for the
#    daemon's end-to-end test.
# 5. The installed C template (share/upparat/sdk-template-c): its two-line Makefile builds it
#    with pkg-config; it passes the conformance kit and is left next to the other.
set(prefix "${WORK}/prefix")
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

# The same check as the fixtures' (tests/plugin/check_exports.cmake).
function(expect_only_entry plugin)
  run("exports of ${plugin}" "${CMAKE_COMMAND}" -DNM=${NM} -DPLUGIN=${plugin}
      -P "${SOURCE_DIR}/tests/plugin/check_exports.cmake")
endfunction()

function(expect_loads plugin name)
  run("upparat-plugin-check ${plugin}" "${prefix}/bin/upparat-plugin-check" "${plugin}")
  if(NOT last_output MATCHES "name: +${name}")
    message(FATAL_ERROR "upparat-plugin-check ${plugin}:\n${last_output}")
  endif()
endfunction()

run("cmake --install" "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${prefix}")

# ---- 0. The installed docs (share/doc/upparat, SDK.md of the template): every relative link
# resolves where they are installed.
include("${SOURCE_DIR}/tests/sdk/doc_links.cmake")
check_doc_links("${prefix}/share")

# ---- 1. CMake package
set(project "${WORK}/vendor-cmake")
file(MAKE_DIRECTORY "${project}")
configure_file("${SOURCE_DIR}/tests/plugin/fixtures/good_plugin.cpp" "${project}/plugin.cpp" COPYONLY)
file(WRITE "${project}/CMakeLists.txt" "cmake_minimum_required(VERSION 3.16)
project(vendor_plugin CXX)
find_package(UpparatPluginSdk 1 REQUIRED)
find_package(Threads REQUIRED)
upparat_add_plugin(vendor-plugin SOURCES plugin.cpp LIBRARIES Threads::Threads INSTALL)
")
run("configure the vendor project" "${CMAKE_COMMAND}" -S "${project}" -B "${project}/build"
    "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_INSTALL_PREFIX=${prefix}")
run("build the vendor project" "${CMAKE_COMMAND}" --build "${project}/build")
run("install the vendor plugin" "${CMAKE_COMMAND}" --install "${project}/build")
set(installed "${prefix}/${LIBDIR}/upparat/plugins/vendor-plugin.so")
if(NOT EXISTS "${installed}")
  message(FATAL_ERROR "the vendor plugin was not installed to ${installed}:\n${last_output}")
endif()
expect_only_entry("${installed}")
expect_loads("${installed}" "fixture-good")

# ---- 2. pkg-config and one compiler command
find_program(PKG_CONFIG pkg-config REQUIRED)
find_program(CC NAMES cc gcc REQUIRED)
set(ENV{PKG_CONFIG_PATH} "${prefix}/${LIBDIR}/pkgconfig")
run("pkg-config --cflags" "${PKG_CONFIG}" --cflags upparat-plugin)
string(STRIP "${last_output}" cflags)
run("pkg-config plugin_ldflags" "${PKG_CONFIG}" --variable=plugin_ldflags upparat-plugin)
string(STRIP "${last_output}" ldflags)
separate_arguments(cflags UNIX_COMMAND "${cflags}")
separate_arguments(ldflags UNIX_COMMAND "${ldflags}")
run("cc with pkg-config" "${CC}" -shared -fPIC -fvisibility=hidden ${cflags}
    "${SOURCE_DIR}/tests/plugin/fixtures/good_c_plugin.c" ${ldflags} -o "${WORK}/c-plugin.so")
expect_only_entry("${WORK}/c-plugin.so")
expect_loads("${WORK}/c-plugin.so" "fixture-c")
run("pkg-config pluginsdir" "${PKG_CONFIG}" --variable=pluginsdir upparat-plugin)
string(STRIP "${last_output}" pluginsdir)
get_filename_component(pluginsdir "${pluginsdir}" REALPATH)
get_filename_component(expected "${prefix}/${LIBDIR}/upparat/plugins" REALPATH)
if(NOT pluginsdir STREQUAL expected)
  message(FATAL_ERROR "pkg-config pluginsdir is ${pluginsdir}, expected ${expected}")
endif()

# ---- 3. another major is refused
set(other "${WORK}/vendor-major2")
file(MAKE_DIRECTORY "${other}")
file(WRITE "${other}/CMakeLists.txt" "cmake_minimum_required(VERSION 3.16)
project(vendor_plugin CXX)
find_package(UpparatPluginSdk 2 REQUIRED)
")
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${other}" -B "${other}/build"
                        "-DCMAKE_PREFIX_PATH=${prefix}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(rc EQUAL 0 OR NOT out MATCHES "UpparatPluginSdk")
  message(FATAL_ERROR "find_package(UpparatPluginSdk 2) was not refused:\n${out}")
endif()

# ---- 4. the template
set(template "${WORK}/my-plugin")
file(COPY "${prefix}/share/upparat/sdk-template/" DESTINATION "${template}")
run("configure the template" "${CMAKE_COMMAND}" -S "${template}" -B "${template}/build"
    "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_INSTALL_PREFIX=${prefix}")
run("build the template" "${CMAKE_COMMAND}" --build "${template}/build")
run("the template's unit tests" "${CMAKE_CTEST_COMMAND}" --test-dir "${template}/build"
    --output-on-failure)
if(NOT last_output MATCHES "100% tests passed")
  message(FATAL_ERROR "the template's tests:\n${last_output}")
endif()
run("install the template's plugin" "${CMAKE_COMMAND}" --install "${template}/build")
set(example "${prefix}/${LIBDIR}/upparat/plugins/upparat-example.so")
expect_only_entry("${example}")
expect_loads("${example}" "example")
# ... and passes the conformance kit of the installed upparat-plugin-check, as sdk/README.md says.
file(WRITE "${WORK}/scratch/version" "1.0.0\n")
run("the conformance kit on the template's plugin" "${prefix}/bin/upparat-plugin-check"
    --conformance --allow-restart "${example}" "version_file=${WORK}/scratch/version"
    "target=${WORK}/scratch/slot")
if(NOT last_output MATCHES "result: every check passed")
  message(FATAL_ERROR "the template's plugin and the conformance kit:\n${last_output}")
endif()
file(MAKE_DIRECTORY "${WORK}/template-plugin")
file(COPY "${example}" DESTINATION "${WORK}/template-plugin")

# ---- 5. the C template: `make` with pkg-config, then the conformance kit
find_program(MAKE_PROGRAM make REQUIRED)
set(template_c "${WORK}/my-c-plugin")
file(COPY "${prefix}/share/upparat/sdk-template-c/" DESTINATION "${template_c}")
run("make the C template" "${MAKE_PROGRAM}" -C "${template_c}")
set(example_c "${template_c}/upparat-example-c.so")
expect_only_entry("${example_c}")
file(WRITE "${WORK}/scratch/version" "1.0.0\n")
run("the conformance kit on the C template's plugin" "${prefix}/bin/upparat-plugin-check"
    --conformance --allow-restart "${example_c}" "version_file=${WORK}/scratch/version"
    "target=${WORK}/scratch/slot")
if(NOT last_output MATCHES "result: every check passed")
  message(FATAL_ERROR "the C template's plugin and the conformance kit:\n${last_output}")
endif()
file(COPY "${example_c}" DESTINATION "${WORK}/template-plugin")

file(REMOVE_RECURSE "${prefix}" "${project}" "${other}" "${template}" "${template_c}")
message(STATUS "the installed SDK builds plugins with CMake and with pkg-config, and its "
               "template builds, passes its tests and installs")
