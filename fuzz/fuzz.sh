#!/usr/bin/env bash
# Builds and runs the libFuzzer targets of fuzz/ (clang; see docs/reliability.md).
#   fuzz/fuzz.sh build [BUILD_DIR]              configure and build every target with clang
#   fuzz/fuzz.sh run NAME SECONDS [BUILD_DIR]   run fuzz_NAME for SECONDS on its seed corpus
#   fuzz/fuzz.sh all SECONDS [BUILD_DIR]        build, run each target, print a table
# BUILD_DIR defaults to build/fuzz. New inputs a run finds go to BUILD_DIR/scratch/NAME (never
# into the repository); a crash, leak or timeout leaves its input in BUILD_DIR/artifacts/NAME/
# and makes the run fail. Extra libFuzzer flags: FUZZ_FLAGS="-jobs=2 -workers=2" fuzz/fuzz.sh ...
# Without clang the build exits 77 (skipped), unless CI=true, where it fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_dir="$here"

targets() {
  sed -n '/^set(UPPARAT_FUZZ_TARGETS/,/)/p' "$here/targets.cmake" | sed '1d;s/[)[:space:]]//g' | grep -v '^$'
}

build() {
  local dir="$1"
  local clang
  clang="$(command -v clang++ || command -v clang++-14 || true)"
  if [ -z "$clang" ]; then
    echo "fuzz: skipped: clang++ is not installed (scripts/install-deps.sh installs clang and libclang-rt-14-dev)" >&2
    [ "${CI:-}" = "true" ] && exit 1
    exit 77
  fi
  local launcher=()
  if command -v ccache >/dev/null 2>&1; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  cmake -S "$source_dir" -B "$dir" -G Ninja -DCMAKE_CXX_COMPILER="$clang" "${launcher[@]}" >/dev/null
  cmake --build "$dir" -j"${FUZZ_BUILD_JOBS:-2}"
}

# Runs one target; prints "NAME runs=N cov=N ft=N corpus=N crashes=N" last.
run() {
  local name="$1" seconds="$2" dir="$3"
  local scratch="$dir/scratch/$name" artifacts="$dir/artifacts/$name"
  if [ ! -x "$dir/fuzz_$name" ] && ! command -v clang++ >/dev/null 2>&1 && [ "${CI:-}" != "true" ]; then
    echo "fuzz: skipped: $dir/fuzz_$name was not built: clang++ is not installed" >&2
    exit 77
  fi
  mkdir -p "$scratch" "$artifacts"
  local log="$dir/scratch/$name.log"
  local status=0
  # -timeout: one input taking longer is a hang; -rss_limit_mb: a blow-up is a finding.
  # shellcheck disable=SC2086
  "$dir/fuzz_$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" ${FUZZ_FLAGS:-} \
    "$scratch" "$source_dir/corpus/$name" >"$log" 2>&1 || status=$?
  local done_line runs
  done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)"
  runs="$(sed -n 's/^stat::number_of_executed_units: //p' "$log" | tail -1)"
  local cov ft corp
  cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")"
  ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")"
  corp="$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$done_line")"
  local crashes
  crashes="$(find "$artifacts" -type f | wc -l)"
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz_$name FAILED (exit $status); the input is in $artifacts/ (full log: $log)" >&2
  fi
  echo "$name runs=${runs:-?} cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?} crashes=$crashes"
  return "$status"
}

command="${1:-}"
case "$command" in
  build)
    build "${2:-build/fuzz}"
    ;;
  run)
    [ $# -ge 3 ] || { echo "usage: fuzz/fuzz.sh run NAME SECONDS [BUILD_DIR]" >&2; exit 2; }
    run "$2" "$3" "${4:-build/fuzz}"
    ;;
  all)
    [ $# -ge 2 ] || { echo "usage: fuzz/fuzz.sh all SECONDS [BUILD_DIR]" >&2; exit 2; }
    dir="${3:-build/fuzz}"
    build "$dir"
    failed=0
    for name in $(targets); do
      run "$name" "$2" "$dir" || failed=1
    done
    exit "$failed"
    ;;
  *)
    sed -n '2,10p' "$0" >&2
    exit 2
    ;;
esac
