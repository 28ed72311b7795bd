#!/usr/bin/env bash
# Installs what is missing (Debian 12), builds, and runs every test through ctest:
# first an optimised build (GCC), then the same suite under AddressSanitizer + UBSan (clang,
# which also builds the libFuzzer targets for the fuzz.short test).
# Set BULWARK_SKIP_SANITIZE=1 to run only the first pass.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_packages $BULWARK_BUILD_PACKAGES $BULWARK_TEST_PACKAGES

jobs=$(nproc)
run_suite() {
  local dir=$1; shift
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  ctest --test-dir "$dir" --output-on-failure --timeout 600 -j"$jobs"
}

echo "== build and test (RelWithDebInfo)"
# -g1: backtraces keep function names and lines, without the full debug info that makes the
# build a quarter slower.
run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG"
if [[ ${BULWARK_SKIP_SANITIZE:-0} != 1 ]]; then
  echo "== build and test with AddressSanitizer + UndefinedBehaviorSanitizer"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  # A build-asan/ left by GCC (an older checkout) is made again rather than mixed.
  if [[ -f build-asan/CMakeCache.txt ]] && ! grep -q '^CMAKE_CXX_COMPILER:.*clang' build-asan/CMakeCache.txt; then
    rm -rf build-asan
  fi
  # clang-16 with libFuzzer's coverage instrumentation too (BULWARK_FUZZ): the same objects
  # build the fuzz targets that fuzz.short runs, so there is no third build. -O1 with line
  # tables: asserts stay on, and reports have file:line.
  CC=clang-16 CXX=clang++-16 run_suite build-asan -DBULWARK_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug \
    "-DCMAKE_C_FLAGS_DEBUG=-O1 -gline-tables-only" "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -gline-tables-only"
fi
