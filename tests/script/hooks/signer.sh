#!/bin/sh
# Records $UPPARAT_SIGNER ("unset" when it is not set) in signer.out next to itself.
printf '%s' "${UPPARAT_SIGNER-unset}" > "$(dirname "$0")/signer.out"
