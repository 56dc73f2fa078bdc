#!/usr/bin/env bash
# Tests the example systemd unit (config/upparat.service) with its hardening and the example
# hooks (config/hooks/) under a real systemd: boots a Debian 12 container (systemd-nspawn) that
# shares the host's network namespace, installs the build into it (`cmake --install`), creates
# the user upparat, a sudoers rule and a stand-in `rauc`, enables the unit and lets one job run
# through it against mosquitto + the Jobs emulator on the host's 127.0.0.1:
#   version -> download -> install (sudo rauc install: root reads the download from outside
#   the unit's sandbox) -> restart (sudo systemctl reboot: the container reboots) -> the unit
#   starts at boot -> version -> ready (sudo rauc status mark-good) -> SUCCEEDED complete_ready.
# Then the reboot of the RAUC plugin (plugins/system: logind's Reboot) as the user upparat:
# refused without config/50-upparat-reboot.rules, accepted with it (the container reboots).
# With the SWUpdate drop-in (config/upparat-swupdate.conf) applied, it also checks that the
# daemon sees the sockets of a stand-in swupdate.socket in /tmp and is in their group.
#
#   tests/systemd/unit_test.sh <build-dir> [<source-dir>]      (as root)
#
# Exit 0 = passed, 77 = skipped (the environment cannot boot a container; the reason is
# printed; under CI=true that is a failure instead), anything else = failed. The Debian root
# file system is built once with debootstrap and cached in $UPPARAT_TEST_ROOTFS (default
# /var/cache/upparat-test-rootfs); each run writes into an overlay on top of it, removed at the
# end. Everything started is stopped, also on failure.
set -euo pipefail

build="$(cd "${1:?usage: unit_test.sh <build-dir> [<source-dir>]}" && pwd)"
here="$(cd "${2:-$(dirname "${BASH_SOURCE[0]}")/../..}" && pwd)"
cache="${UPPARAT_TEST_ROOTFS:-/var/cache/upparat-test-rootfs}"
mirror="${UPPARAT_TEST_MIRROR:-http://deb.debian.org/debian}"
timeout_s="${UPPARAT_TEST_TIMEOUT:-300}"
thing="unit-thing"
job="upparat_unit_$(date +%s)"
machine="upparat-unit-$$"

# shellcheck source=scripts/lib/template.sh
source "$here/scripts/lib/template.sh"

say() { printf '==> %s\n' "$*" >&2; }
# Under CI (CI=true) the environment must be able to run this test: a skip there is a failure.
skip() {
  if [ "${CI:-}" = true ]; then echo "FAILED (CI=true, where this test may not skip): $*" >&2; exit 1; fi
  echo "SKIPPED: $*"; exit 77
}
die() { echo "FAILED: $*" >&2; exit 1; }

# ---- can this environment boot a container at all? --------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "needs root (systemd-nspawn, overlay mount)"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn not installed (apt-get install systemd-container)"
command -v nsenter >/dev/null || skip "nsenter not installed"
[ -x /usr/sbin/mosquitto ] || skip "mosquitto not installed"
emulator="$build/sdk/emulator/upparat-jobs-emulator"
[ -x "$emulator" ] || die "upparat-jobs-emulator not found in $build (build it first)"

# ---- the cached root file system ---------------------------------------------------------------
# shellcheck source=tests/systemd/rootfs.sh
source "$here/tests/systemd/rootfs.sh"
ensure_test_rootfs "$cache" "$mirror"

# ---- everything below is undone by cleanup -----------------------------------------------------
work="$(mktemp -d /var/tmp/upparat-unit.XXXXXX)"
root="$work/root"
pids=()
nspawn_pid=""
cgroups=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
      echo "--- journal of the container (upparat.service)" >&2
      timeout 20 nsenter -t "$(leader)" -m -u -i -p -C -- \
        journalctl --no-pager -u upparat.service -n 80 >&2 || true
    fi
    kill -TERM "$nspawn_pid" 2>/dev/null || true  # orderly shutdown of the container
    for _ in $(seq 150); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
    for log in "$work"/*.log; do [ -f "$log" ] && { echo "--- $log" >&2; tail -n 40 "$log" >&2; }; done
  fi
  for cg in "${cgroups[@]}"; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  if mountpoint -q "$root" 2>/dev/null; then umount "$root" || umount -l "$root" || true; fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The container's PID 1 (the child of systemd-nspawn), and a command run inside the container.
leader() { cat "/proc/$nspawn_pid/task/$nspawn_pid/children" 2>/dev/null | awk '{print $1}'; }
container_exec() {
  local l
  l="$(leader)"
  [ -n "$l" ] || return 1
  nsenter -t "$l" -m -u -i -p -C -- "$@"
}

# The container gets a cgroup of its own (--keep-unit: no systemd on the host to allocate a
# scope); else its systemd would manage, and at shutdown kill, the caller's cgroup.
cgroups=()
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  cgroups=("/sys/fs/cgroup/$machine")                                     # unified
elif [ -d /sys/fs/cgroup/systemd ]; then
  cgroups=("/sys/fs/cgroup/systemd/$machine")                             # legacy / hybrid
  [ -f /sys/fs/cgroup/unified/cgroup.procs ] && cgroups+=("/sys/fs/cgroup/unified/$machine")
fi
[ "${#cgroups[@]}" -gt 0 ] || skip "no usable cgroup file system under /sys/fs/cgroup"
for cg in "${cgroups[@]}"; do mkdir "$cg" 2>/dev/null || skip "cannot create the cgroup $cg"; done

mkdir -p "$root" "$work/upper" "$work/ovl"
mount -t overlay overlay -o "lowerdir=$cache,upperdir=$work/upper,workdir=$work/ovl" "$root" ||
  skip "cannot mount an overlay file system on $cache"

# ---- install the daemon into the container -----------------------------------------------------
say "installing the build into the container (cmake --install, prefix /usr)"
DESTDIR="$root" cmake --install "$build" --prefix /usr >"$work/install.log" 2>&1 ||
  die "cmake --install failed"
plugin="$(cd "$root" && find usr/lib -name upparat-script.so | head -n1)"
[ -n "$plugin" ] && [ -x "$root/usr/sbin/upparat" ] && [ -f "$root/usr/lib/systemd/system/upparat.service" ] ||
  die "installed files missing (daemon, plugin or unit)"
cmp -s "$here/config/upparat.service" "$root/usr/lib/systemd/system/upparat.service" ||
  die "the installed unit is not config/upparat.service"
# A /usr install switches on the polkit rule (as the upparat-plugin-rauc package does). Kept
# aside here: the reboot check below first proves that logind refuses without it.
rule="usr/share/polkit-1/rules.d/50-upparat-reboot.rules"
[ -f "$root/$rule" ] || die "a /usr install did not install the polkit rule to /$rule"
mv "$root/$rule" "$work/50-upparat-reboot.rules"

useradd -R "$root" --system --user-group --home-dir /var/lib/upparat --no-create-home \
  --shell /usr/sbin/nologin upparat
# The SWUpdate drop-in (config/upparat-swupdate.conf), active in a /usr install as in the
# upparat-plugin-swupdate package, with a stand-in for Debian's swupdate.socket (its sockets in
# /tmp, mode 0660, group swupdate); checked after the job.
cmp -s "$here/config/upparat-swupdate.conf" "$root/usr/lib/systemd/system/upparat.service.d/swupdate.conf" ||
  die "a /usr install did not install the SWUpdate drop-in as upparat.service.d/swupdate.conf"
groupadd -R "$root" --system swupdate
mkdir -p "$root/etc/systemd/system/sockets.target.wants"
printf '[Socket]\nListenStream=/tmp/sockinstctrl\nListenStream=/tmp/swupdateprog\nSocketMode=0660\nSocketGroup=swupdate\n[Install]\nWantedBy=sockets.target\n' \
  >"$root/etc/systemd/system/swupdate.socket"
printf '[Service]\nExecStart=/bin/sleep infinity\n' >"$root/etc/systemd/system/swupdate.service"
ln -sf ../swupdate.socket "$root/etc/systemd/system/sockets.target.wants/swupdate.socket"
# A fresh machine id per run (no first-boot wizard).
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$root/etc/machine-id"
echo >>"$root/etc/machine-id"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /usr/lib/systemd/system/upparat.service "$root/etc/systemd/system/multi-user.target.wants/upparat.service"

# What the example hooks need on a device: sudo for rauc and the reboot.
cat >"$root/etc/sudoers.d/upparat" <<'EOF'
upparat ALL=(root) NOPASSWD: /usr/local/bin/rauc, /usr/bin/systemctl reboot
EOF
chmod 0440 "$root/etc/sudoers.d/upparat"
# A stand-in for RAUC: `install` reads the bundle through a separate root service outside the
# upparat unit's sandbox (like RAUC's D-Bus service would) and "installs" the version of its
# first line; `status mark-good` marks the slot good.
mkdir -p "$root/usr/local/bin"
cat >"$root/usr/local/bin/rauc" <<'EOF'
#!/bin/sh
set -e
umask 022
mkdir -p /var/lib/fake-rauc /var/lib/upparat-demo
case "$1 $2" in
  "install "*)
    systemd-run --quiet --wait --pipe --property=User=root cat "$2" >/var/lib/fake-rauc/bundle
    echo "$(id -un) $(cat /proc/self/loginuid 2>/dev/null)" >/var/lib/fake-rauc/installed-by
    head -n1 /var/lib/fake-rauc/bundle >/var/lib/upparat-demo/installed_version
    echo "rauc: installed $2"
    ;;
  "status mark-good") date >/var/lib/fake-rauc/marked-good ;;
  *) echo "rauc: unsupported: $*" >&2; exit 1 ;;
esac
EOF
chmod 0755 "$root/usr/local/bin/rauc"

# ---- broker and emulator on the host's loopback ------------------------------------------------
# shellcheck source=scripts/lib/local_cloud.sh
source "$here/scripts/lib/local_cloud.sh"
start_local_cloud "$emulator"

{ echo "2.0.0-demo"; head -c $((1024 * 1024)) /dev/urandom | base64; } >"$work/firmware.bin"
"$emulator" put-object --bucket upparat-demo --key firmware.bin --file "$work/firmware.bin" >/dev/null
"$emulator" create-job --job-id "$job" --document "$here/config/demo-job.json" --thing "$thing" >/dev/null

mkdir -p "$root/etc/upparat"
render_template "$here/config/templates/local.toml.in" "$root/etc/upparat/upparat.toml" \
  STATE_DIRECTORY=/var/lib/upparat MQTT_PORT="$mqtt_port" THING="$thing" PLUGIN="/$plugin" \
  HOOKS=/usr/share/upparat/hooks

# ---- boot; a reboot of the container (the restart hook) ends systemd-nspawn: boot again -------
boots=0
boot() {
  boots=$((boots + 1))
  say "booting the container (boot $boots)"
  (
    for cg in "${cgroups[@]}"; do echo "$BASHPID" >"$cg/cgroup.procs"; done
    exec systemd-nspawn -D "$root" --boot -M "$machine" --register=no --keep-unit
  ) </dev/null >>"$work/nspawn.log" 2>&1 &
  nspawn_pid=$!
}
boot

start=$(date +%s)
status=""
while :; do
  if ! kill -0 "$nspawn_pid" 2>/dev/null; then
    wait "$nspawn_pid" && rc=0 || rc=$?
    nspawn_pid=""
    # 133: the container rebooted.
    [ "$rc" -eq 133 ] || die "systemd-nspawn exited with $rc (boot $boots)"
    [ "$boots" -lt 3 ] || die "the container rebooted more than twice"
    boot
  fi
  status="$(job_status "$emulator" "$thing" "$job")"
  case "$status" in
    SUCCEEDED | FAILED | REJECTED | CANCELED | TIMED_OUT | REMOVED) break ;;
  esac
  [ $(($(date +%s) - start)) -lt "$timeout_s" ] || die "job not finished after $timeout_s s (status '$status')"
  sleep 1
done
"$emulator" describe --thing "$thing" --job-id "$job" >"$work/describe.log" 2>&1 || true
cat "$work/describe.log" >&2

[ "$status" = SUCCEEDED ] || die "job $job ended $status"
grep -q complete_ready "$work/describe.log" || die "job did not succeed with complete_ready"
[ "$boots" -eq 2 ] || die "expected one reboot by the restart hook, saw $((boots - 1))"
cmp -s "$work/firmware.bin" "$root/var/lib/fake-rauc/bundle" ||
  die "rauc (root, outside the unit) did not read the downloaded file intact"
[ -f "$root/var/lib/fake-rauc/marked-good" ] || die "the ready hook did not mark the slot good"
container_exec systemctl is-active upparat.service >/dev/null || die "upparat.service not active after the job"
[ "$(container_exec systemctl show -P User upparat.service)" = upparat ] || die "unit not running as upparat"
# With the SWUpdate drop-in the daemon sees SWUpdate's sockets in the real /tmp and is in their
# group (the unit's own PrivateTmp=true and User=upparat would hide and refuse them).
main_pid="$(container_exec systemctl show -P MainPID upparat.service)"
swupdate_gid="$(grep '^swupdate:' "$root/etc/group" | cut -d: -f3)"
container_exec nsenter -t "$main_pid" -m -- test -S /tmp/sockinstctrl ||
  die "upparat.service does not see SWUpdate's /tmp/sockinstctrl (drop-in not applied?)"
container_exec grep -Eq "^Groups:.*\b$swupdate_gid\b" "/proc/$main_pid/status" ||
  die "upparat.service is not in the group swupdate (drop-in not applied?)"
# The unit's Environment= reaches the daemon (glibc without tcache: docs/benchmarks.md).
container_exec cat "/proc/$main_pid/environ" | tr '\0' '\n' | grep -qx 'GLIBC_TUNABLES=glibc.malloc.tcache_count=0' ||
  die "upparat.service runs without GLIBC_TUNABLES=glibc.malloc.tcache_count=0"

# ---- the RAUC plugin's reboot: logind, as the user upparat, allowed by the polkit rule --------
# polkitd and libsdbus-c++ (not in the cached rootfs) come from Debian packages downloaded once;
# --force-depends: logind is in the rootfs (the systemd package), only libpam-systemd is not.
reboot_tool="$build/tests/plugin_system/upparat_reboot_tool"
[ -x "$reboot_tool" ] || die "upparat_reboot_tool not found in $build (build it first)"
debs="$cache.polkit-debs"
if [ ! -f "$debs/.complete" ]; then
  say "downloading polkitd and libsdbus-c++1 for the container (once, into $debs)"
  rm -rf "$debs" && mkdir -p "$debs"
  (cd "$debs" && apt-get download -q libglib2.0-0 xml-core sgml-base libduktape207 \
      libpolkit-agent-1-0 libpolkit-gobject-1-0 libsdbus-c++1 polkitd) >"$work/debs.log" 2>&1 ||
    skip "apt-get download of polkitd failed (see the log above; the job itself passed)"
  touch "$debs/.complete"
fi
mkdir -p "$root/var/cache/upparat-debs" && cp "$debs"/*.deb "$root/var/cache/upparat-debs/"
cp "$reboot_tool" "$root/usr/local/bin/upparat_reboot_tool"
container_exec env DEBIAN_FRONTEND=noninteractive sh -c 'dpkg -i --force-depends /var/cache/upparat-debs/*.deb' >"$work/dpkg.log" 2>&1 ||
  die "installing polkitd in the container failed"
container_exec systemctl start polkit.service || die "polkit.service did not start"
as_upparat() { container_exec setpriv --reuid upparat --regid upparat --init-groups "$@"; }
if as_upparat /usr/local/bin/upparat_reboot_tool >"$work/reboot-denied.log" 2>&1; then
  die "logind rebooted for upparat without the polkit rule"
fi
grep -q "50-upparat-reboot.rules" "$work/reboot-denied.log" ||
  die "the refused reboot does not point to the polkit rule: $(cat "$work/reboot-denied.log")"
install -m 0644 "$work/50-upparat-reboot.rules" "$root/$rule"
container_exec systemctl restart polkit.service || die "polkit.service did not restart"
as_upparat /usr/local/bin/upparat_reboot_tool >"$work/reboot-allowed.log" 2>&1 ||
  die "logind refused the reboot with the polkit rule: $(cat "$work/reboot-allowed.log")"
for _ in $(seq 300); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
kill -0 "$nspawn_pid" 2>/dev/null && die "logind accepted the reboot, but the container still runs after 60 s"
wait "$nspawn_pid" && rc=0 || rc=$?
nspawn_pid=""
[ "$rc" -eq 133 ] || die "after the logind reboot systemd-nspawn exited with $rc, not 133 (reboot)"
say "PASSED: job $job SUCCEEDED complete_ready through upparat.service (one reboot), the SWUpdate drop-in applied, and upparat rebooted the container through logind with the polkit rule"
