#!/bin/sh
# install hook: prints a line, then waits until the test saw it as progress (the test creates
# "seen"), so it only succeeds when output is streamed line by line, not collected at the end.
dir=$(dirname "$0")
echo "step one"
i=0
while [ ! -e "$dir/seen" ]; do
  i=$((i + 1))
  if [ "$i" -gt 300 ]; then
    echo "step one was not reported while the hook ran" >&2
    exit 1
  fi
  sleep 0.05
done
echo "step two"
echo "installed $4"
