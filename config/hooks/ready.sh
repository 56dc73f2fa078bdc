#!/bin/sh
# ready hook: after the reboot, exit 0 when the new system is healthy (then the job SUCCEEDS
# complete_ready); else the job FAILS ready_hook_failed. $1 seconds, $2 retry count, $3 meta.
# Example: the essential services run, and RAUC marks the slot good.
if command -v rauc >/dev/null 2>&1 && [ -z "${UPPARAT_DEMO_DIR:-}" ]; then
  sudo -n rauc status mark-good
fi
exit 0
