#!/usr/bin/env bash
# Download benchmark: our downloader against `curl -o f && sync -f f` on a file served by a
# local nginx (127.0.0.1, plain HTTP, so both pay the same and only the client differs).
#
#   bench/download_bench.sh [--size-mib N] [--runs N] [--verify] [--smoke]
#                           [--bench PATH] [--workdir DIR]
#
#   --size-mib N  file size (default 1024 = 1 GiB)
#   --runs N      measured runs of each, alternating (default 3)
#   --verify      give our downloader the sha256 and make curl's side run sha256sum too
#   --smoke       16 MiB, 1 run: the CI smoke run (fails only if a download fails)
#   --bench PATH  the upparat-download-bench binary
#                 (default: ${UPPARAT_BUILD_DIR:-build}/bench/upparat-download-bench)
#   --workdir DIR where the files go (default: a new directory under /var/tmp; not /tmp,
#                 which may be RAM)
#
# Prints the runs, the medians, the ratios ours/curl against the targets, the number of
# progress callbacks and of progress updates the daemon would publish, and the resume cost
# (killed with SIGKILL at 50 %, resumed: bytes sent by nginx in total / file size).
set -euo pipefail

size_mib=1024
runs=3
verify=0
bench="${UPPARAT_BUILD_DIR:-build}/bench/upparat-download-bench"
workdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) size_mib="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --verify) verify=1; shift ;;
    --smoke) size_mib=16; runs=1; shift ;;
    --bench) bench="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 64 ;;
  esac
done
[ -x "$bench" ] || { echo "no benchmark binary at $bench (build with -DUPPARAT_BUILD_BENCH=ON)" >&2; exit 1; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "nginx is not installed" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is not installed" >&2; exit 1; }
bench="$(cd "$(dirname "$bench")" && pwd)/$(basename "$bench")"

if [ -z "$workdir" ]; then
  workdir="$(mktemp -d /var/tmp/upparat-bench.XXXXXX)"
else
  mkdir -p "$workdir"
  workdir="$(cd "$workdir" && pwd)"
fi
nginx_pid=""
cleanup() {
  if [ -n "$nginx_pid" ]; then kill "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; fi
  rm -rf "$workdir"
}
trap cleanup EXIT

mkdir -p "$workdir/www" "$workdir/out" "$workdir/tmp"
# nginx's worker runs as an unprivileged user when started as root: let it read the files.
chmod 0755 "$workdir" "$workdir/www"
echo "creating a ${size_mib} MiB file in $workdir/www"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$workdir/www/big.bin"
echo x >"$workdir/www/small.bin"
chmod 0644 "$workdir/www/big.bin" "$workdir/www/small.bin"
size=$(stat -c %s "$workdir/www/big.bin")

start_nginx() {
  local port
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    port=$(shuf -i 20000-60000 -n 1)
    cat >"$workdir/nginx.conf" <<EOF
worker_processes 1;
pid $workdir/nginx.pid;
error_log $workdir/error.log;
events {}
http {
  log_format bench '\$request_uri \$status \$body_bytes_sent';
  access_log $workdir/access.log bench;
  client_body_temp_path $workdir/tmp/body;
  proxy_temp_path $workdir/tmp/proxy;
  fastcgi_temp_path $workdir/tmp/fastcgi;
  uwsgi_temp_path $workdir/tmp/uwsgi;
  scgi_temp_path $workdir/tmp/scgi;
  sendfile on;
  server { listen 127.0.0.1:$port; root $workdir/www; }
}
EOF
    /usr/sbin/nginx -p "$workdir" -c "$workdir/nginx.conf" -g 'daemon off;' &
    nginx_pid=$!
    for _ in $(seq 50); do
      if curl -sf -o /dev/null "http://127.0.0.1:$port/small.bin"; then
        echo "$port" >"$workdir/port"
        return 0
      fi
      kill -0 "$nginx_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
    nginx_pid=""
  done
  echo "nginx did not start" >&2
  return 1
}
start_nginx
port=$(cat "$workdir/port")
url="http://127.0.0.1:$port/big.bin"
small_url="http://127.0.0.1:$port/small.bin"

sha_args=()
small_sha_args=()
if [ "$verify" = 1 ]; then
  sha_args=(--sha256 "$(sha256sum "$workdir/www/big.bin" | cut -d' ' -f1)")
  small_sha_args=(--small-sha256 "$(sha256sum "$workdir/www/small.bin" | cut -d' ' -f1)")
fi

echo "== ours vs curl -o f && sync -f f: ${size_mib} MiB, $runs runs each, alternating"
"$bench" compare --url "$url" --small-url "$small_url" --dir "$workdir/out" --runs "$runs" \
  "${sha_args[@]}" "${small_sha_args[@]}"

echo "== progress"
rm -rf "$workdir/out/p"
line=$("$bench" fetch --url "$url" --dir "$workdir/out/p" --job upparat_p "${sha_args[@]}")
echo "$line"
callbacks=$(sed -n 's/.*callbacks=\([0-9]*\).*/\1/p' <<<"$line")
published=$(sed -n 's/.*published=\([0-9]*\).*/\1/p' <<<"$line")
echo "progress callbacks: $callbacks; updates published under the daemon's budget" \
     "(every 5 % or 30 s): $published; the Python version (every 100 KiB): $((size / 102400))"
rm -rf "$workdir/out/p"

echo "== resume cost: SIGKILL at 50 %, then resume"
mark=$(wc -l <"$workdir/access.log")
rm -rf "$workdir/out/r" "$workdir/state"
"$bench" fetch --url "$url" --dir "$workdir/out/r" --job upparat_r --state "$workdir/state" \
  --kill-at-percent 50 "${sha_args[@]}" || true
if [ -f "$workdir/state" ]; then
  echo "killed; saved state: $(tr '\n' ' ' <"$workdir/state")"
else
  echo "killed before the first fsync (every 16 MiB or 5 s): nothing saved"
fi
"$bench" fetch --url "$url" --dir "$workdir/out/r" --job upparat_r --state "$workdir/state" \
  "${sha_args[@]}"
cmp -s "$workdir/out/r/upparat_r" "$workdir/www/big.bin" || { echo "resumed file differs!" >&2; exit 1; }
sleep 1  # nginx logs a connection when it notices the close
sent=$(tail -n +"$((mark + 1))" "$workdir/access.log" | awk '$1 == "/big.bin" { s += $3 } END { print s + 0 }')
awk -v s="$sent" -v n="$size" 'BEGIN { printf "resume cost: %d bytes sent for a %d-byte file = %.4f x the size\n", s, n, s / n }'
