#!/bin/sh
# version hook: print the installed version as the last line of stdout.
# $1 seconds since the first call, $2 retry count, $3 the job's meta.
# Example for RAUC: rauc status --output-format=json | jq -r '.slots[]...'
# The demo keeps the version in a file ($UPPARAT_DEMO_DIR, else /etc/upparat).
state="${UPPARAT_DEMO_DIR:-/var/lib/upparat-demo}/installed_version"
if [ -r "$state" ]; then
  cat "$state"
else
  . /etc/os-release 2>/dev/null
  echo "${VERSION_ID:-0}"
fi
