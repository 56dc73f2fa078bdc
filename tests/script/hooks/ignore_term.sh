#!/bin/sh
# Ignores SIGTERM (like the restart hook of the talk), and so do its children: only SIGKILL
# ends it.
trap '' TERM
dir=$(dirname "$0")
echo $$ > "$dir/child.tmp" && mv "$dir/child.tmp" "$dir/child.pid"
echo "running"
while :; do sleep 1; done
