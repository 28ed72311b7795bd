#!/usr/bin/env bash
# Installs what is missing (Debian 12), builds, and runs every test through ctest:
# first an optimised build, then the same suite under AddressSanitizer + UBSan.
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
run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [[ ${BULWARK_SKIP_SANITIZE:-0} != 1 ]]; then
  echo "== build and test with AddressSanitizer + UndefinedBehaviorSanitizer"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DBULWARK_SANITIZE=ON
fi
