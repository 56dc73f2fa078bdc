#!/bin/sh
# restart hook: restart into the new system. Usually never returns (the reboot stops the
# daemon with SIGTERM first; the job then continues after the boot with the version and ready
# hooks). Returning 0 means a soft restart that finished: the job SUCCEEDS complete_soft_restart.
# $1 seconds, $2 retry count, $3 meta, $4 force as True/False.
if [ -n "${UPPARAT_DEMO_DIR:-}" ]; then
  echo "demo: soft restart"
  exit 0
fi
exec sudo -n systemctl reboot
