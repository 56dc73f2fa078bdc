#!/bin/sh
# restart hook: restart into the new system. Usually never returns (the reboot stops the
# daemon with SIGTERM first; the job then continues after the boot with the version and ready
# hooks). Returning 0 means a soft restart that finished: the job SUCCEEDS complete_soft_restart.
# $1 seconds, $2 retry count, $3 meta, $4 force as True/False.
if [ -n "${UPPARAT_DEMO_DIR:-}" ]; then
  echo "demo: soft restart"
  exit 0
fi
sudo -n systemctl reboot || exit 1
# systemctl returns as soon as the reboot is queued: wait for the shutdown to stop us (returning
# 0 here would report a finished soft restart). Still running after 10 minutes: failed.
sleep 600
echo "no reboot after 600 s" >&2
exit 1
