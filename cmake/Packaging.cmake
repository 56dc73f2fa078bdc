# Debian packages with CPack (README.md, "Debian packages"):
#   upparat                  the daemon, the script plugin, upparat-plugin-check, the example
#                            configuration (/etc/upparat, a conffile), the systemd unit and
#                            the system user (sysusers.d)
#   upparat-plugin-rauc      the RAUC plugin, its example configuration and the polkit rule
#   upparat-plugin-swupdate  the SWUpdate plugin, its example configuration and the drop-in
#   upparat-dev              the plugin SDK: headers, CMake package, pkg-config file,
#                            templates and the Jobs + S3 emulator
# Each install rule belongs to one of the components daemon, rauc, swupdate and dev (the
# folders set CMAKE_INSTALL_DEFAULT_COMPONENT_NAME). Dependencies on shared libraries come from
# dpkg-shlibdeps. Build with
#   cmake -S . -B build/deb -DCMAKE_BUILD_TYPE=Release -DUPPARAT_BUILD_TESTS=OFF \
#         -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_INSTALL_SYSCONFDIR=/etc
#   cmake --build build/deb && (cd build/deb && cpack -G DEB)
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME upparat)
set(CPACK_PACKAGE_VENDOR "Upparat developers")
set(CPACK_PACKAGE_CONTACT "Upparat developers <dev@upparat.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
# Install with DESTDIR and the prefix /usr whatever the build was configured with, so that the
# install scripts see /usr: the configuration goes to /etc, the distribution files are
# installed. The daemon finds its plugins relative to its own path.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL daemon rauc swupdate dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(upparat_deb_version "${PROJECT_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE}")

set(CPACK_DEBIAN_DAEMON_PACKAGE_NAME upparat)
set(CPACK_DEBIAN_DAEMON_DESCRIPTION
    "Over-the-air update agent for AWS IoT Jobs\n The daemon fetches AWS IoT Jobs over MQTT, downloads the file and runs the update\n through plugins (the classic hook scripts with the script plugin), reporting every\n step as the job's status.")
# systemd-sysusers creates the user in postinst.
set(CPACK_DEBIAN_DAEMON_PACKAGE_DEPENDS "systemd")
configure_file(${PROJECT_SOURCE_DIR}/config/debian/postinst ${PROJECT_BINARY_DIR}/debian/postinst
               COPYONLY)
configure_file(${PROJECT_SOURCE_DIR}/config/debian/postrm ${PROJECT_BINARY_DIR}/debian/postrm
               COPYONLY)
file(WRITE ${PROJECT_BINARY_DIR}/debian/conffiles "/etc/upparat/upparat.toml\n")
set(CPACK_DEBIAN_DAEMON_PACKAGE_CONTROL_EXTRA
    "${PROJECT_BINARY_DIR}/debian/postinst;${PROJECT_BINARY_DIR}/debian/postrm;${PROJECT_BINARY_DIR}/debian/conffiles")
set(CPACK_DEBIAN_DAEMON_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_RAUC_PACKAGE_NAME upparat-plugin-rauc)
set(CPACK_DEBIAN_RAUC_DESCRIPTION
    "RAUC plugin of the Upparat update agent\n Installs RAUC bundles through the RAUC service on D-Bus, checks the booted slot\n and marks it good.")
set(CPACK_DEBIAN_RAUC_PACKAGE_DEPENDS "upparat (= ${upparat_deb_version})")
set(CPACK_DEBIAN_RAUC_PACKAGE_RECOMMENDS "rauc, polkitd")

set(CPACK_DEBIAN_SWUPDATE_PACKAGE_NAME upparat-plugin-swupdate)
set(CPACK_DEBIAN_SWUPDATE_DESCRIPTION
    "SWUpdate plugin of the Upparat update agent\n Installs .swu images through a running SWUpdate daemon's IPC, also streamed while\n they download.")
# The drop-in makes upparat.service join SWUpdate's socket group, which swupdate creates.
set(CPACK_DEBIAN_SWUPDATE_PACKAGE_DEPENDS "upparat (= ${upparat_deb_version}), swupdate")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME upparat-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_DEV_DESCRIPTION
    "SDK for plugins of the Upparat update agent\n Headers, CMake package, pkg-config file, templates and the AWS IoT Jobs + S3\n emulator; the conformance kit is upparat-plugin-check in the upparat package.")
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "upparat (= ${upparat_deb_version})")

include(CPack)
