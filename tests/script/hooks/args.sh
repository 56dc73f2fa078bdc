#!/bin/sh
# Records its arguments exactly (NUL-separated) in args.out next to itself.
printf '%s\0' "$@" > "$(dirname "$0")/args.out"
echo "recorded $# arguments"
