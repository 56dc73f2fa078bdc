#!/bin/sh
# The download hook of the talk: a critical section is running, so retry later.
echo "checking for /tmp/cortex.critical.lock"
echo "critical section active" >&2
exit 3
