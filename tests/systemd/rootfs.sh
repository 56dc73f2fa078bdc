# Sourced by the tests that need a Debian 12 root file system (tests/systemd/unit_test.sh,
# tests/packaging/deb_test.sh). The caller defines say() and skip().
#
#   ensure_test_rootfs <cache> <mirror>
#
# Builds the root file system with debootstrap once into <cache> (the daemon's runtime
# libraries, systemd, dbus, sudo), under a lock so that tests running at the same time build it
# once; later calls find it complete. Skips (skip "reason") where it cannot be built.
ensure_test_rootfs() {
  local cache="$1" mirror="$2"
  [ -f "$cache/.upparat-rootfs-complete" ] && return 0
  command -v debootstrap >/dev/null || skip "no cached rootfs in $cache and debootstrap not installed"
  mkdir -p "$(dirname "$cache")"
  exec 9>"$cache.lock"
  flock 9
  if [ ! -f "$cache/.upparat-rootfs-complete" ]; then
    say "building the Debian rootfs in $cache (debootstrap, once; a few minutes)"
    rm -rf "$cache.tmp"
    # The runtime libraries of the daemon (Debian 12 packages), systemd, sudo.
    if ! debootstrap --variant=minbase \
      --include=systemd,systemd-sysv,dbus,sudo,libpaho-mqttpp3-1,libpaho-mqtt1.3,libspdlog1.10,libfmt9,libcurl4,libssl3,libsystemd0 \
      bookworm "$cache.tmp" "$mirror" >"$cache.debootstrap.log" 2>&1; then
      tail -n 5 "$cache.debootstrap.log" >&2
      rm -rf "$cache.tmp"
      exec 9>&-
      skip "debootstrap of Debian bookworm from $mirror failed (see $cache.debootstrap.log)"
    fi
    rm -rf "$cache"
    touch "$cache.tmp/.upparat-rootfs-complete"
    mv "$cache.tmp" "$cache"
  fi
  exec 9>&-
}
