#!/usr/bin/env bash
# Builds and runs every test of Upparat. Run as root on Debian 12: installs what is missing.
#   Pass 1: AddressSanitizer + UndefinedBehaviorSanitizer build of the unit tests (the target
#           upparat_unit_tests: each unit test and what it needs), which it runs (label "unit").
#   Pass 2: normal build, every test; its last lines are CTest's summary.
# Environment: UPPARAT_BUILD_DIR (default ./build), UPPARAT_SKIP_ASAN=1 to skip pass 1 locally.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${UPPARAT_BUILD_DIR:-$root/build}
export CTEST_OUTPUT_ON_FAILURE=1
# Tests make temporary files and sockets here; a private TMPDIR keeps runs apart.
export TMPDIR=${TMPDIR:-/tmp}

bash scripts/install-deps.sh

configure() {  # configure <dir> <cmake args...>
  local dir=$1; shift
  cmake -S "$root" -B "$dir" -G Ninja -DUPPARAT_BUILD_TESTS=ON "$@" >/dev/null
}

if [ "${UPPARAT_SKIP_ASAN:-0}" != 1 ]; then
  echo "== pass 1: sanitizers (ASan + UBSan), unit tests"
  configure "$build/asan" -DCMAKE_BUILD_TYPE=Debug -DUPPARAT_SANITIZE=ON
  cmake --build "$build/asan" -j "$(nproc)" --target upparat_unit_tests
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir "$build/asan" -L unit -j 2 --timeout 300
fi

echo "== pass 2: normal build, every test"
configure "$build/release" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUPPARAT_BUILD_BENCH=ON
cmake --build "$build/release" -j "$(nproc)"
ctest --test-dir "$build/release" -j 2 --timeout 300
