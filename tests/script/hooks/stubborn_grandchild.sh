#!/bin/sh
# The child dies on SIGTERM, but its grandchild ignores SIGTERM and keeps stdout and stderr
# open: the plugin must not wait for end of file forever.
dir=$(dirname "$0")
sh -c 'trap "" TERM; echo $$ > "$1/grandchild.tmp" && mv "$1/grandchild.tmp" "$1/grandchild.pid"
       while :; do sleep 1; done' sh "$dir" &
echo $$ > "$dir/child.tmp" && mv "$dir/child.tmp" "$dir/child.pid"
wait
