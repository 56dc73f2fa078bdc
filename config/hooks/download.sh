#!/bin/sh
# download hook: exit 0 when downloading is allowed now, 3 to be asked again later
# (after retry_interval), anything else fails the job. $1 seconds, $2 retry count, $3 meta.
# Example: do not download on a metered connection.
if [ -e /run/upparat-metered ]; then
  echo "metered connection: later" >&2
  exit 3
fi
exit 0
