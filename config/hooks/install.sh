#!/bin/sh
# install hook: install the downloaded file $4. Each stdout line is reported to the cloud as
# installation_progress (throttled). Exit 0 = installed, 3 = retry later, else failed.
# $1 seconds, $2 retry count, $3 meta, $4 the downloaded file.
set -e
file="$4"
echo "installing $(basename "$file") ($(wc -c < "$file") bytes)"
if command -v rauc >/dev/null 2>&1 && [ -z "${UPPARAT_DEMO_DIR:-}" ]; then
  # A real device: RAUC needs root; the unit's hardening leaves sudo usable.
  sudo -n rauc install "$file"
else
  demo="${UPPARAT_DEMO_DIR:-/var/lib/upparat-demo}"
  mkdir -p "$demo"
  for p in 25 50 75 100; do
    echo "progress ${p}%"
    sleep 0.2
  done
  cp "$file" "$demo/installed.bin"
  # The demo's job meta carries the new version.
  echo "$3" > "$demo/installed_version"
fi
echo "installed"
