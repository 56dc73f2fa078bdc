#!/bin/sh
# Fails with exit code 1; the last stderr lines are the reason.
echo "some output"
echo "first error" >&2
echo "second error" >&2
echo "third error" >&2
echo "fourth error" >&2
exit 1
