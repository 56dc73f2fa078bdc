#!/bin/sh
# stderr with control characters, an ANSI colour sequence and invalid UTF-8.
printf 'bad\001 \033[31mred\033[0m \377\376 bytes\tend\n' >&2
exit 2
