# Sourced by the scripts that run a job against a local cloud: mosquitto and the AWS IoT Jobs +
# S3 emulator on 127.0.0.1 (scripts/demo.sh, tests/systemd/unit_test.sh,
# tests/packaging/deb_test.sh). The caller defines die(), a `pids` array (the processes it
# stops on exit) and `work` (a folder for configuration and logs).

# A TCP port nothing listens on at 127.0.0.1.
free_port() {
  local port
  for _ in $(seq 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  die "no free port found"
}

# wait_for <file> <pattern> <seconds>: until the file holds the pattern.
wait_for() {
  local t=0
  until grep -q -- "$2" "$1" 2>/dev/null; do
    sleep 0.2
    t=$((t + 1))
    [ "$t" -lt $(($3 * 5)) ] || die "timed out waiting for '$2' in $1"
  done
}

# start_local_cloud <emulator>: mosquitto (plain TCP, loopback only) and the emulator serving
# it (S3 over plain HTTP). Sets mqtt_port and exports UPPARAT_EMULATOR_CONTROL for the
# emulator's CLI.
start_local_cloud() {
  local emulator="$1" t=0 control_port
  mqtt_port="$(free_port)"
  cat >"$work/mosquitto.conf" <<EOC
listener $mqtt_port 127.0.0.1
allow_anonymous true
persistence false
log_dest stdout
EOC
  /usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  pids+=($!)
  until (exec 3<>"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null; do
    sleep 0.2
    t=$((t + 1))
    [ "$t" -lt 50 ] || die "mosquitto did not listen on port $mqtt_port"
  done
  "$emulator" serve --broker "tcp://127.0.0.1:$mqtt_port" --s3-http >"$work/emulator.log" 2>&1 &
  pids+=($!)
  wait_for "$work/emulator.log" '"ready":true' 20
  control_port="$(grep -o '"control_port":[0-9]*' "$work/emulator.log" | head -n1 | cut -d: -f2)"
  export UPPARAT_EMULATOR_CONTROL="http://127.0.0.1:$control_port"
}

# job_status <emulator> <thing> <job>: the execution's status as the cloud sees it ("" if
# the emulator cannot say).
job_status() {
  "$1" describe --thing "$2" --job-id "$3" --json 2>/dev/null |
    grep -o '"status":"[A-Z_]*"' | head -n1 | cut -d'"' -f4 || true
}
