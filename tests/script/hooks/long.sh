#!/bin/sh
# A long install that only a stop request ends.
dir=$(dirname "$0")
echo $$ > "$dir/child.tmp" && mv "$dir/child.tmp" "$dir/child.pid"
echo "installing slowly"
sleep 300
