#!/bin/sh
# 5 MB on stderr without a newline, then the real reason, then failure.
head -c 5000000 /dev/zero | tr '\0' 'e' >&2
echo >&2
echo "disk full" >&2
exit 1
