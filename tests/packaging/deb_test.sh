#!/usr/bin/env bash
# Tests the Debian packages (cmake/Packaging.cmake): builds them with CPack from the build,
# checks each package's name, dependencies and files, and installs all four into a fresh
# Debian 12 root (the cached debootstrap root of tests/systemd, under an overlay).
# - upparat: its postinst creates the user upparat; `upparat --check-config` accepts the
#   example configuration, and the installed daemon, as the user upparat with the installed
#   script plugin and hooks, takes one job of the emulator (mosquitto and the emulator on the
#   host's 127.0.0.1; chroot shares the network) to SUCCEEDED.
# - upparat-plugin-rauc, upparat-plugin-swupdate, upparat-dev, with the Debian packages they
#   need that the root lacks (resolved by this machine's apt against the root's dpkg status,
#   downloaded from Debian's archive once into a cache beside the root's): dpkg configures
#   every package; the installed upparat-plugin-check loads both plugins; the polkit rule and
#   the SWUpdate drop-in are in place and the group the drop-in names exists; both SDK
#   templates build on this machine against the root's installed SDK (CMake package and
#   pkg-config file, found only there) and their plugins load in the root.
# - A purge of the four packages leaves none of their files and removes the daemon's state.
#
#   tests/packaging/deb_test.sh <build-dir> [<source-dir>]      (as root)
#
# Exit 0 = passed, 77 = skipped (the reason is printed; under CI=true that is a failure; a
# failed download skips after upparat has passed), anything else = failed. Everything started
# or mounted is undone, also on failure.
set -euo pipefail

build="$(cd "${1:?usage: deb_test.sh <build-dir> [<source-dir>]}" && pwd)"
here="$(cd "${2:-$(dirname "${BASH_SOURCE[0]}")/../..}" && pwd)"
cache="${UPPARAT_TEST_ROOTFS:-/var/cache/upparat-test-rootfs}"
mirror="${UPPARAT_TEST_MIRROR:-http://deb.debian.org/debian}"
timeout_s="${UPPARAT_TEST_TIMEOUT:-120}"
thing="deb-thing"
job="upparat_deb_$(date +%s)"

say() { printf '==> %s\n' "$*" >&2; }
skip() {
  if [ "${CI:-}" = true ]; then echo "FAILED (CI=true, where this test may not skip): $*" >&2; exit 1; fi
  echo "SKIPPED: $*"; exit 77
}
die() { echo "FAILED: $*" >&2; exit 1; }

# shellcheck source=scripts/lib/template.sh
source "$here/scripts/lib/template.sh"
# shellcheck source=scripts/lib/local_cloud.sh
source "$here/scripts/lib/local_cloud.sh"
# shellcheck source=tests/systemd/rootfs.sh
source "$here/tests/systemd/rootfs.sh"

[ "$(id -u)" -eq 0 ] || skip "needs root (overlay mount, chroot, dpkg in a root)"
command -v dpkg-shlibdeps >/dev/null || skip "dpkg-shlibdeps not installed (apt-get install dpkg-dev)"
[ -x /usr/sbin/mosquitto ] || skip "mosquitto not installed"
emulator="$build/sdk/emulator/upparat-jobs-emulator"
[ -x "$emulator" ] || die "upparat-jobs-emulator not found in $build (build it first)"
ensure_test_rootfs "$cache" "$mirror"

work="$(mktemp -d /var/tmp/upparat-deb.XXXXXX)"
root="$work/root"
pids=()
mounts=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
    for log in "$work"/*.log; do [ -f "$log" ] && { echo "--- $log" >&2; tail -n 40 "$log" >&2; }; done
  fi
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" || true
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build the packages ------------------------------------------------------------------------
say "building the packages (cpack -G DEB)"
(cd "$build" && cpack -G DEB -B "$work/debs") >"$work/cpack.log" 2>&1 || die "cpack failed"
version="$(dpkg-deb -f "$work"/debs/upparat_*.deb Version)"
deb() { ls "$work"/debs/"$1"_*.deb; }
field() { dpkg-deb -f "$(deb "$1")" "$2"; }
files() { dpkg-deb -c "$(deb "$1")" | awk '{print $6}' | sed 's|^\./|/|'; }
has_file() { files "$1" | grep -qx -- "$2" || die "package $1 lacks $2"; }
depends_on() { field "$1" Depends | tr ',' '\n' | sed 's/^ *//' | grep -q -- "^$2" ||
  die "package $1 does not depend on $2 (Depends: $(field "$1" Depends))"; }

for p in upparat upparat-plugin-rauc upparat-plugin-swupdate upparat-dev; do
  [ -f "$(deb "$p")" ] || die "no package $p"
done
has_file upparat /usr/sbin/upparat
has_file upparat /usr/bin/upparat-plugin-check
has_file upparat /usr/lib/upparat/plugins/upparat-script.so
has_file upparat /etc/upparat/upparat.toml
has_file upparat /usr/lib/systemd/system/upparat.service
has_file upparat /usr/lib/sysusers.d/upparat.conf
dpkg-deb -e "$(deb upparat)" "$work/control"
grep -qx /etc/upparat/upparat.toml "$work/control/conffiles" || die "the configuration is not a conffile"
# Dependencies from dpkg-shlibdeps, not a hand list.
depends_on upparat libpaho-mqttpp3
depends_on upparat libcurl4
has_file upparat-plugin-rauc /usr/lib/upparat/plugins/upparat-rauc.so
has_file upparat-plugin-rauc /usr/share/polkit-1/rules.d/50-upparat-reboot.rules
depends_on upparat-plugin-rauc "upparat (= $version)"
depends_on upparat-plugin-rauc libsdbus-c++1
has_file upparat-plugin-swupdate /usr/lib/upparat/plugins/upparat-swupdate.so
has_file upparat-plugin-swupdate /usr/lib/systemd/system/upparat.service.d/swupdate.conf
depends_on upparat-plugin-swupdate libswupdate
depends_on upparat-plugin-swupdate swupdate
has_file upparat-dev /usr/include/upparat/plugin.h
has_file upparat-dev /usr/lib/cmake/UpparatPluginSdk/UpparatPluginSdkConfig.cmake
has_file upparat-dev /usr/lib/pkgconfig/upparat-plugin.pc
has_file upparat-dev /usr/bin/upparat-jobs-emulator
depends_on upparat-dev "upparat (= $version)"
# Every dependency of every package exists in Debian 12: this machine's apt (Debian 12's
# package lists) resolves the four packages against the root's dpkg status, installing nothing.
# What it would install besides them is what the root lacks, each as "name version arch".
apt-get install -s -q -o APT::Install-Recommends=false \
  -o Dir::State::status="$cache/var/lib/dpkg/status" "$work"/debs/*.deb >"$work/apt-simulate.log" 2>&1 ||
  die "the packages' dependencies cannot be resolved in Debian 12 (see apt-simulate.log)"
! grep -q '^Remv ' "$work/apt-simulate.log" || die "installing the packages would remove packages of the root"
sed -n 's/^Inst \([^ ]*\) \(\[[^]]*\] \)\{0,1\}(\([^ ]*\) .*\[\([^]]*\)\])$/\1 \3 \4/p' \
  "$work/apt-simulate.log" | grep -Ev '^upparat(-plugin-rauc|-plugin-swupdate|-dev)? ' >"$work/root-lacks" || true

# ---- the Debian packages the root lacks: downloaded once, then from the cache ------------------
# Kept in a folder beside the root's cache, under their archive names (name_version_arch.deb),
# so that a later run with the same package lists needs no network. A failed download skips
# the part of the test that needs them, after upparat itself has passed.
debs="$cache.deb-debs"
deps=()
fetch=()
while read -r name version arch; do
  deps+=("${name}_${version//:/%3a}_${arch}.deb")
  [ -f "$debs/${deps[-1]}" ] || fetch+=("$name=$version")
done <"$work/root-lacks"
deps_unavailable=""
if [ ${#fetch[@]} -gt 0 ]; then
  say "downloading ${#fetch[@]} Debian packages the root lacks (once, into $debs)"
  mkdir -p "$debs" "$work/download"
  # apt renames a file into place once it is complete: keep what came, also after a failure.
  if ! (cd "$work/download" && apt-get download -q "${fetch[@]}") >"$work/download.log" 2>&1; then
    tail -n 3 "$work/download.log" >&2
    deps_unavailable="apt-get download of ${#fetch[@]} Debian packages the root lacks (${fetch[*]}) failed"
  fi
  find "$work/download" -maxdepth 1 -name '*.deb' -exec mv -t "$debs/" {} +
fi

# ---- install into a fresh root -----------------------------------------------------------------
mkdir -p "$root" "$work/upper" "$work/ovl"
mount -t overlay overlay -o "lowerdir=$cache,upperdir=$work/upper,workdir=$work/ovl" "$root" ||
  skip "cannot mount an overlay file system on $cache"
mounts+=("$root")
for m in proc dev; do
  mount --rbind "/$m" "$root/$m" || die "cannot bind /$m into the root"
  mount --make-rslave "$root/$m"
  mounts+=("$root/$m")
done
cp "$work"/debs/*.deb "$root/tmp/"
# The Debian packages the root lacks first, then upparat, then the packages that depend on it.
if [ -z "$deps_unavailable" ] && [ ${#deps[@]} -gt 0 ]; then
  say "installing ${#deps[@]} Debian packages the root lacks"
  mkdir -p "$root/tmp/deps"
  for d in "${deps[@]}"; do cp "$debs/$d" "$root/tmp/deps/"; done
  chroot "$root" dpkg -i "${deps[@]/#//tmp/deps/}" >"$work/dpkg.log" 2>&1 ||
    die "dpkg -i of the Debian packages the root lacks failed (see dpkg.log)"
fi
say "installing $(basename "$(deb upparat)") into a fresh Debian 12 root"
chroot "$root" dpkg -i "/tmp/$(basename "$(deb upparat)")" >>"$work/dpkg.log" 2>&1 ||
  die "dpkg -i upparat failed in the fresh root"
chroot "$root" id upparat >/dev/null || die "the postinst did not create the user upparat"
# The example configuration names the device's certificates and hooks, which an integrator
# puts in place: without them the check names the first missing file; with them (the example
# hooks copied from /usr/share/upparat/hooks) it passes.
if chroot "$root" /usr/sbin/upparat -c /etc/upparat/upparat.toml --check-config >"$work/check-config.log" 2>&1; then
  die "upparat --check-config accepts the example configuration without its certificates"
fi
grep -q "cafile.*no such file: /etc/upparat/AmazonRootCA1.pem" "$work/check-config.log" ||
  die "the check of the example configuration does not name the missing CA file"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=deb-test \
  -keyout "$root/etc/upparat/private.pem.key" -out "$root/etc/upparat/device.pem.crt" >/dev/null 2>&1 ||
  die "openssl could not make a test certificate"
cp "$root/etc/upparat/device.pem.crt" "$root/etc/upparat/AmazonRootCA1.pem"
chmod 0640 "$root/etc/upparat/private.pem.key"
chroot "$root" chgrp upparat /etc/upparat/private.pem.key
cp -a "$root/usr/share/upparat/hooks" "$root/etc/upparat/hooks"
chroot "$root" /usr/sbin/upparat -c /etc/upparat/upparat.toml --check-config >"$work/check-config.log" 2>&1 ||
  die "upparat --check-config refuses the installed example configuration with its certificates"
chroot "$root" /usr/bin/upparat-plugin-check /usr/lib/upparat/plugins/upparat-script.so >"$work/plugin-check.log" 2>&1 ||
  die "upparat-plugin-check cannot load the installed script plugin"

# ---- one job with the installed daemon ---------------------------------------------------------
start_local_cloud "$emulator"
head -c $((256 * 1024)) /dev/urandom >"$work/firmware.bin"
"$emulator" put-object --bucket upparat-demo --key firmware.bin --file "$work/firmware.bin" >/dev/null
"$emulator" create-job --job-id "$job" --document "$here/config/demo-job.json" --thing "$thing" >/dev/null
render_template "$here/config/templates/local.toml.in" "$root/etc/upparat/local.toml" \
  STATE_DIRECTORY=/var/lib/upparat MQTT_PORT="$mqtt_port" THING="$thing" \
  PLUGIN=/usr/lib/upparat/plugins/upparat-script.so HOOKS=/usr/share/upparat/hooks
# What systemd's StateDirectory= would do; the demo hooks keep the version in device/.
install -d -o "$(chroot "$root" id -u upparat)" -g "$(chroot "$root" id -g upparat)" -m 0750 \
  "$root/var/lib/upparat" "$root/var/lib/upparat/device"
echo "1.0.0" >"$root/var/lib/upparat/device/installed_version"
chown "$(chroot "$root" id -u upparat)" "$root/var/lib/upparat/device/installed_version"
say "running the installed daemon as the user upparat"
chroot --userspec=upparat:upparat "$root" /usr/bin/env UPPARAT_DEMO_DIR=/var/lib/upparat/device \
  /usr/sbin/upparat -c /etc/upparat/local.toml >"$work/upparat.log" 2>&1 &
pids+=($!)
daemon_pid=$!
start=$(date +%s)
status=""
while :; do
  kill -0 "$daemon_pid" 2>/dev/null || die "the installed daemon exited"
  status="$(job_status "$emulator" "$thing" "$job")"
  case "$status" in
    SUCCEEDED | FAILED | REJECTED | CANCELED | TIMED_OUT | REMOVED) break ;;
  esac
  [ $(($(date +%s) - start)) -lt "$timeout_s" ] || die "job not finished after $timeout_s s (status '$status')"
  sleep 0.5
done
[ "$status" = SUCCEEDED ] || die "job $job ended $status"
cmp -s "$work/firmware.bin" "$root/var/lib/upparat/device/installed.bin" ||
  die "the installed hooks did not install the job's file"
kill -TERM "$daemon_pid"
wait "$daemon_pid" || die "the installed daemon did not exit cleanly on SIGTERM"

[ -z "$deps_unavailable" ] || skip "$deps_unavailable (upparat itself passed: installed, checked and ran job $job)"

# ---- the plugins and the SDK -------------------------------------------------------------------
say "installing the plugins and the SDK"
chroot "$root" dpkg -i "/tmp/$(basename "$(deb upparat-plugin-rauc)")" \
  "/tmp/$(basename "$(deb upparat-plugin-swupdate)")" "/tmp/$(basename "$(deb upparat-dev)")" \
  >>"$work/dpkg.log" 2>&1 || die "dpkg -i of the plugins and the SDK failed"
# dpkg ended with every package of the root configured, and nothing half-installed.
chroot "$root" dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' >"$work/status.log"
! grep -v '^ii ' "$work/status.log" || die "packages not configured in the root (above)"
chroot "$root" dpkg --audit >"$work/audit.log" 2>&1 && [ ! -s "$work/audit.log" ] ||
  die "dpkg --audit: $(cat "$work/audit.log")"

plugins=/usr/lib/upparat/plugins
plugin_loads() { # <path in the root> <name>: the installed upparat-plugin-check loads it
  chroot "$root" /usr/bin/upparat-plugin-check "$1" >"$work/plugin-check.log" 2>&1 ||
    die "upparat-plugin-check cannot load $1 in the root: $(cat "$work/plugin-check.log")"
  grep -Eq "^name: +$2\$" "$work/plugin-check.log" || die "$1 is not the plugin $2: $(cat "$work/plugin-check.log")"
}
plugin_loads $plugins/upparat-rauc.so rauc
plugin_loads $plugins/upparat-swupdate.so swupdate
# Where they take effect, each from its package; the drop-in's socket group exists (swupdate,
# a dependency, creates it).
rule=/usr/share/polkit-1/rules.d/50-upparat-reboot.rules
dropin=/usr/lib/systemd/system/upparat.service.d/swupdate.conf
[ "$(chroot "$root" dpkg-query -S $rule)" = "upparat-plugin-rauc: $rule" ] || die "$rule is not from upparat-plugin-rauc"
[ "$(stat -c '%U %a' "$root$rule")" = "root 644" ] || die "$rule is not root's with mode 0644"
[ "$(chroot "$root" dpkg-query -S $dropin)" = "upparat-plugin-swupdate: $dropin" ] || die "$dropin is not from upparat-plugin-swupdate"
group="$(sed -n 's/^SupplementaryGroups=//p' "$root$dropin")"
[ -n "$group" ] && chroot "$root" getent group "$group" >/dev/null ||
  die "the group '$group' of the SWUpdate drop-in does not exist in the root"
chroot "$root" /usr/bin/upparat-jobs-emulator --help >"$work/emulator-help.log" 2>&1 ||
  die "the installed upparat-jobs-emulator does not run in the root"

# A vendor's plugins against the installed SDK: both templates, copied out of the root and
# built with this machine's compiler against the root's /usr (the CMake package and the
# pkg-config file are relocatable), then loaded by upparat-plugin-check in the root.
vendor="$work/vendor"
mkdir -p "$vendor"
cp -a "$root/usr/share/upparat/sdk-template" "$vendor/cmake"
cp -a "$root/usr/share/upparat/sdk-template-c" "$vendor/c"
say "building the SDK templates against the root's upparat-dev"
cmake -S "$vendor/cmake" -B "$vendor/cmake/build" -DCMAKE_PREFIX_PATH="$root/usr" \
  -DEXAMPLE_BUILD_TESTS=OFF >"$work/vendor.log" 2>&1 || die "the template does not configure against the root's SDK"
grep -qx "UpparatPluginSdk_DIR:PATH=$root/usr/lib/cmake/UpparatPluginSdk" "$vendor/cmake/build/CMakeCache.txt" ||
  die "the template found the SDK elsewhere than in the root: $(grep UpparatPluginSdk_DIR "$vendor/cmake/build/CMakeCache.txt")"
cmake --build "$vendor/cmake/build" >>"$work/vendor.log" 2>&1 || die "the template does not build against the root's SDK"
# pkg-config sees only the root's .pc file.
PKG_CONFIG_LIBDIR="$root/usr/lib/pkgconfig" PKG_CONFIG_PATH="" make -C "$vendor/c" >>"$work/vendor.log" 2>&1 ||
  die "the C template does not build against the root's SDK"
# In a folder only root may write (the loader refuses plugins in /tmp).
install -d -m 0755 "$root/root/vendor-plugins"
cp "$vendor/cmake/build/upparat-example.so" "$vendor/c/upparat-example-c.so" "$root/root/vendor-plugins/"
plugin_loads /root/vendor-plugins/upparat-example.so example
plugin_loads /root/vendor-plugins/upparat-example-c.so example-c
rm -r "$root/root/vendor-plugins"

# ---- purge -------------------------------------------------------------------------------------
# What the integrator added to /etc/upparat goes first (dpkg keeps a folder with files of
# nobody's); then nothing a package listed may remain but folders other packages own too, and
# the daemon's state is gone. The user upparat stays, as Debian leaves system users.
ours=(upparat-dev upparat-plugin-rauc upparat-plugin-swupdate upparat)
chroot "$root" dpkg -L "${ours[@]}" | grep -vx -e '' -e '/\.' | sort -u >"$work/listed"
rm -rf "$root/etc/upparat/hooks" "$root/etc/upparat/local.toml" "$root/etc/upparat/private.pem.key" \
  "$root/etc/upparat/device.pem.crt" "$root/etc/upparat/AmazonRootCA1.pem"
chroot "$root" dpkg --purge "${ours[@]}" >>"$work/dpkg.log" 2>&1 || die "dpkg --purge of the packages failed"
for p in "${ours[@]}"; do
  state="$(chroot "$root" dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null || true)"
  case "$state" in "" | pn*) ;; *) die "$p is '$state' after the purge, not gone" ;; esac
done
left=()
while read -r path; do
  [ -e "$root$path" ] || [ -L "$root$path" ] || continue
  [ -d "$root$path" ] && [ ! -L "$root$path" ] || die "a purge left $path"
  left+=("$path")
done <"$work/listed"
if [ ${#left[@]} -gt 0 ] && ! chroot "$root" dpkg-query -S "${left[@]}" >"$work/left.log" 2>&1; then
  die "a purge left folders no other package owns: $(grep -o 'matching pattern .*' "$work/left.log" | tr '\n' ' ')"
fi
[ ! -e "$root/var/lib/upparat" ] || die "a purge left /var/lib/upparat"
chroot "$root" dpkg --audit >"$work/audit.log" 2>&1 && [ ! -s "$work/audit.log" ] ||
  die "dpkg --audit after the purge: $(cat "$work/audit.log")"
say "PASSED: 4 packages built and installed with ${#deps[@]} Debian packages into a fresh root; job $job SUCCEEDED with the installed daemon as the user upparat; the plugins and both SDK templates built against upparat-dev load there; the purge left none of their files"
