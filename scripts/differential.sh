#!/usr/bin/env bash
# Differential conformance: the request table of tests/integration/conformance_cases.py (and
# RESPONSE_CASES of tests/integration/conformance_responses.py, when that module exists) sent
# to Bulwark, HAProxy and NGINX side by side in front of one recording backend. Installs
# haproxy and nginx-light (Debian 12) when missing, builds Bulwark, prints Markdown tables
# (see scripts/differential.py for how to read a cell). docs/conformance.md holds a run.
# Exit status 1 when Bulwark itself differs from the table.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_packages $BULWARK_BUILD_PACKAGES python3 haproxy nginx-light

cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target bulwark >/dev/null
# The packages' own services are not needed (nor wanted on the test ports).
for svc in haproxy nginx; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    echo "note: the $svc service is running; the differential run uses its own instance" >&2
  fi
done
exec python3 scripts/differential.py --bulwark build-release/bulwark "$@"
