#!/usr/bin/env bash
# Builds Bulwark, bulwark-testd and bulwark-load, then runs scripts/shedding_report.py (the
# load-shedding experiment of docs/resilience.md: a table and docs/images/load-shedding.png).
# Usage: scripts/shedding_report.sh [--level-seconds S] [--png FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_packages $BULWARK_BUILD_PACKAGES $BULWARK_TEST_PACKAGES python3-matplotlib
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target bulwark bulwark-testd bulwark-load >/dev/null
# Debian's matplotlib loads under /usr/bin/python3, which may not be the first python3 on PATH.
exec /usr/bin/python3 scripts/shedding_report.py --build build "$@"
