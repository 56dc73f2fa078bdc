#!/usr/bin/env bash
# The README's "run" command: one update, end to end, on this machine only.
#
#   scripts/demo.sh            (as root, or with sudo available for the package install)
#
# Installs the Debian packages (scripts/install-deps.sh), builds the daemon, the script plugin
# and the Jobs emulator, starts mosquitto and the emulator (Jobs over MQTT + S3 over HTTP) on
# free loopback ports, creates a demo job, and runs the daemon with the script plugin and the
# example hooks of config/hooks/ until the job is SUCCEEDED, printing each status update.
# Everything it starts is stopped again, also on failure or Ctrl-C.
#
# Environment: BUILD_DIR (default: build), DEMO_TIMEOUT seconds (default: 180),
# SKIP_DEPS=1 to skip the package installation.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$here/build}"
timeout_s="${DEMO_TIMEOUT:-180}"
thing="demo-thing"
job="upparat_demo_$(date +%s)"

# shellcheck source=scripts/lib/template.sh
source "$here/scripts/lib/template.sh"
# shellcheck source=scripts/lib/local_cloud.sh
source "$here/scripts/lib/local_cloud.sh"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# ---- 1. dependencies -------------------------------------------------------------------------
if [ "${SKIP_DEPS:-0}" != 1 ]; then
  say "installing dependencies (scripts/install-deps.sh)"
  if [ "$(id -u)" -eq 0 ]; then
    "$here/scripts/install-deps.sh"
  else
    sudo "$here/scripts/install-deps.sh"
  fi
fi

# ---- 2. build ---------------------------------------------------------------------------------
say "building into $build"
if [ ! -f "$build/CMakeCache.txt" ]; then
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  cmake -S "$here" -B "$build" "${generator[@]}" -DUPPARAT_BUILD_TESTS=OFF >/dev/null
fi
cmake --build "$build" --target upparat upparat-script upparat-plugin-check upparat-jobs-emulator -j"$(nproc)"
# This build's own outputs (the test builds of scripts/test.sh may live below $build too).
upparat="$build/host/daemon/upparat"
plugin="$build/lib/upparat/plugins/upparat-script.so"
emulator="$build/sdk/emulator/upparat-jobs-emulator"
[ -x "$upparat" ] && [ -f "$plugin" ] && [ -x "$emulator" ] || die "build outputs not found in $build"

# ---- 3. everything below is stopped by cleanup -----------------------------------------------
work="$(mktemp -d /tmp/upparat-demo.XXXXXX)"
pids=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    echo "demo failed (exit $rc); logs:" >&2
    for log in "$work"/*.log; do [ -f "$log" ] && { echo "--- $log" >&2; tail -n 30 "$log" >&2; }; done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting mosquitto on 127.0.0.1 (plain TCP, loopback only) and the AWS IoT Jobs + S3 emulator"
start_local_cloud "$emulator"
grep '"ready":true' "$work/emulator.log" >&2

say "uploading a demo firmware and creating job $job"
head -c $((2 * 1024 * 1024)) /dev/urandom >"$work/firmware.bin"
"$emulator" put-object --bucket upparat-demo --key firmware.bin --file "$work/firmware.bin" >&2
"$emulator" create-job --job-id "$job" --document "$here/config/demo-job.json" --thing "$thing" >&2

say "running upparat with the script plugin and the example hooks (config/hooks)"
mkdir -p "$work/device"
echo "1.0.0" >"$work/device/installed_version"
render_template "$here/config/templates/local.toml.in" "$work/upparat.toml" \
  STATE_DIRECTORY="$work/state" MQTT_PORT="$mqtt_port" THING="$thing" PLUGIN="$plugin" \
  HOOKS="$here/config/hooks"
"$upparat" -c "$work/upparat.toml" --check-config >&2
UPPARAT_DEMO_DIR="$work/device" "$upparat" -c "$work/upparat.toml" >"$work/upparat.log" 2>&1 &
pids+=($!)
daemon_pid=$!

say "status updates of $job as the cloud sees them"
last=0
start=$(date +%s)
result=""
while :; do
  kill -0 "$daemon_pid" 2>/dev/null || die "the daemon exited"
  # The status first, then the history: once the status is final, the history read after it
  # holds the final update too, so the last line is never missed.
  status="$(job_status "$emulator" "$thing" "$job")"
  # The history lines (indented) of the execution, one per status update, each with its
  # versionNumber ("v3"): print those not printed yet.
  out="$("$emulator" describe --thing "$thing" --job-id "$job" 2>/dev/null | grep '^ ' || true)"
  while IFS= read -r line; do
    v="$(printf '%s\n' "$line" | awk '{print $3}' | tr -dc 0-9)"
    if [ -n "$v" ] && [ "$v" -gt "$last" ]; then
      printf '%s\n' "$line"
      last="$v"
    fi
  done <<<"$out"
  case "$status" in
    SUCCEEDED | FAILED | REJECTED | CANCELED | TIMED_OUT | REMOVED) result="$status"; break ;;
  esac
  [ $(($(date +%s) - start)) -lt "$timeout_s" ] || die "job not finished after $timeout_s s"
  sleep 0.5
done

if [ "$result" = SUCCEEDED ]; then
  say "job $job SUCCEEDED; installed version: $(cat "$work/device/installed_version")"
  exit 0
fi
die "job $job ended $result"
