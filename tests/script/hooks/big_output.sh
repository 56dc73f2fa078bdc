#!/bin/sh
# 40000 lines of 99 characters (about 4 MB), then one line of 3000000 characters without a
# newline, as fast as the pipe takes them.
yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' | head -n 40000
head -c 3000000 /dev/zero | tr '\0' 'y'
