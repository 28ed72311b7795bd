#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with Debian's clang-16 in build-fuzz/ and runs each
# one after the other, on one core, for SECONDS seconds (default 60, or $BULWARK_FUZZ_SECONDS),
# starting from its seed corpus in tests/fuzz/corpus/<target>/.
#
#   scripts/fuzz.sh [--keep] [--build-dir DIR] [SECONDS] [TARGET...]
#
# --build-dir DIR uses an existing BULWARK_FUZZ build (as scripts/test.sh's sanitizer pass
# makes) instead of configuring build-fuzz/; the targets are only brought up to date there.
#
# New interesting inputs go to a temporary directory, not the repository; with --keep they
# are merged (minimised with -merge=1) into tests/fuzz/corpus/<target>/ at the end. A crash,
# leak, timeout or broken invariant makes the script exit 1 after the remaining targets ran,
# printing the path of each crashing input (kept under the temporary directory, which is then
# not deleted). Reproduce one with: build-fuzz/tests/fuzz/TARGET PATH
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
seconds=${BULWARK_FUZZ_SECONDS:-60}
build=""
targets=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --keep) keep=1 ;;
    --build-dir) build=${2:?--build-dir needs a directory}; shift ;;
    ''|*[!0-9]*) targets+=("$1") ;;
    *) seconds=$1 ;;
  esac
  shift
done
[[ ${#targets[@]} -eq 0 ]] &&
  targets=(fuzz_values fuzz_config fuzz_chunked fuzz_request fuzz_response fuzz_h2 fuzz_h2_upstream)

declare -A dict=([fuzz_values]=values [fuzz_config]=config [fuzz_chunked]=http [fuzz_request]=http
                 [fuzz_response]=http [fuzz_h2]=h2 [fuzz_h2_upstream]=h2)
declare -A max_len=([fuzz_values]=64 [fuzz_config]=4096 [fuzz_chunked]=2048 [fuzz_request]=4096
                    [fuzz_response]=4096 [fuzz_h2]=20480 [fuzz_h2_upstream]=20480)

# The build: its own directory, clang-16, at most two compile jobs (the machine is shared);
# or the one given, already configured.
if [[ -z $build ]]; then
  source scripts/deps.sh
  install_packages $BULWARK_BUILD_PACKAGES clang-16 libfuzzer-16-dev libclang-rt-16-dev
  build=build-fuzz
  CC=clang-16 CXX=clang++-16 cmake -S . -B $build -DBULWARK_FUZZ=ON -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j"${BULWARK_FUZZ_BUILD_JOBS:-2}" --target "${targets[@]}"

work=$(mktemp -d "${TMPDIR:-/tmp}/bulwark-fuzz.XXXXXX")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "${targets[@]}"; do
  seeds=tests/fuzz/corpus/$t
  mkdir -p "$work/$t/new" "$work/$t/artifacts"
  echo "== $t: ${seconds}s from $(ls "$seeds" | wc -l) seeds"
  status=0
  # One process, one core (no -jobs/-workers: those fork children). New inputs land in the
  # first directory.
  "$build/tests/fuzz/$t" "$work/$t/new" "$seeds" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="${max_len[$t]}" \
    -dict="tests/fuzz/dict/${dict[$t]}.dict" -print_final_stats=1 \
    -artifact_prefix="$work/$t/artifacts/" >"$work/$t/log" 2>&1 || status=$?
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' \
    "$work/$t/log" || true
  echo "   new inputs: $(ls "$work/$t/new" | wc -l)"
  crashes=$(ls "$work/$t/artifacts")
  if [[ $status -ne 0 || -n $crashes ]]; then
    failed+=("$t")
    echo "!! $t failed (exit $status); log: $work/$t/log" >&2
    grep -E 'ERROR|invariant failed|SUMMARY' "$work/$t/log" | head -5 >&2 || true
    for c in $crashes; do echo "!! crashing input: $work/$t/artifacts/$c" >&2; done
  elif [[ $keep -eq 1 ]]; then
    "$build/tests/fuzz/$t" -merge=1 "$seeds" "$work/$t/new" -max_len="${max_len[$t]}" \
      >"$work/$t/merge.log" 2>&1
    echo "   corpus now $(ls "$seeds" | wc -l) files"
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing failed: ${failed[*]} (inputs and logs in $work)" >&2
  exit 1
fi
rm -rf "$work"
echo "fuzzing passed: ${targets[*]}"
