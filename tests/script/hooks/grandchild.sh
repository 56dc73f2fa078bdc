#!/bin/sh
# Starts a grandchild that sleeps, then waits for it.
dir=$(dirname "$0")
sleep 300 &
echo $! > "$dir/grandchild.tmp" && mv "$dir/grandchild.tmp" "$dir/grandchild.pid"
echo $$ > "$dir/child.tmp" && mv "$dir/child.tmp" "$dir/child.pid"
wait
