#!/usr/bin/env bash
# Installs every build, test and runtime dependency of Upparat from Debian 12 packages.
# Idempotent: running it again installs nothing new. Must run as root.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: must run as root (apt-get install)" >&2
  exit 1
fi

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git ca-certificates clang-format clang-tidy clang-tools
  # fuzz/: clang, and libFuzzer's runtime (only a recommendation of clang, not installed here)
  clang libclang-rt-14-dev
  # libraries of the daemon and the emulator
  libboost-dev libpaho-mqttpp-dev libpaho-mqtt-dev libcurl4-openssl-dev rapidjson-dev
  libtoml11-dev libspdlog-dev libfmt-dev libssl-dev libexpected-dev libsystemd-dev libcpp-httplib-dev
  # tests
  googletest libgtest-dev libgmock-dev
  # real peers used by tests and the demo
  mosquitto nginx-light openssl curl procps util-linux
  # tests/systemd: the unit under a real systemd in a container
  systemd-container debootstrap
  # Debian packages (cmake/Packaging.cmake, tests/packaging): dpkg-shlibdeps
  dpkg-dev
  # native plugins (RAUC over D-Bus, SWUpdate's IPC) and packaging
  rauc swupdate libswupdate-dev libsdbus-c++-dev dbus squashfs-tools cpio
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps.sh: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# Packaged services must not hold the ports or files tests use: tests start their own.
for svc in mosquitto nginx; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
