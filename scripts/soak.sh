#!/usr/bin/env bash
# Soak test: Bulwark in front of bulwark-testd (and redis-server, for a global rate limit)
# under mixed traffic for DURATION: keep-alive and new connections, a few large bodies (GET
# and echoed POST, CRC-checked), slow clients (some past the 2 s header timeout: 408),
# client resets mid-response, backend resets before and mid-response, a SIGHUP config
# reload every RELOAD_EVERY seconds, the backend killed and restarted every RESTART_EVERY
# seconds (Redis first at 0.75x that, then every 1.5x). The bulwark process's RSS and
# descriptor count are sampled every 5 s to OUT/soak.csv, plotted to OUT/soak.png, and a
# summary is printed (start/end/max RSS and fds, requests, answers and errors by kind).
# Exits 1 if bulwark crashed or did not exit cleanly.
#
# Usage: scripts/soak.sh [DURATION]        DURATION in seconds, or with a unit: 90s, 30m, 1h
#   env: DURATION (default 30m), OUT (default build/soak), RELOAD_EVERY (30), RESTART_EVERY (120),
#        BULWARK_BIN, BULWARK_TESTD (default build/bulwark, build/bulwark-testd)
# Build first: cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
# Debian's matplotlib for the plot (python3-matplotlib), redis-server for the global limit.
install_packages python3 python3-matplotlib redis-server

duration=${1:-${DURATION:-30m}}
case $duration in
  *h) seconds=$(( ${duration%h} * 3600 )) ;;
  *m) seconds=$(( ${duration%m} * 60 )) ;;
  *s) seconds=${duration%s} ;;
  *) seconds=$duration ;;
esac
export BULWARK_BIN=${BULWARK_BIN:-$PWD/build/bulwark}
export BULWARK_TESTD=${BULWARK_TESTD:-$PWD/build/bulwark-testd}
for b in "$BULWARK_BIN" "$BULWARK_TESTD"; do
  [[ -x $b ]] || { echo "missing $b: build first" >&2; exit 2; }
done
out=${OUT:-$PWD/build/soak}
# Debian's interpreter: python3-matplotlib is installed for it (another python3 may come
# first on PATH).
py=/usr/bin/python3
[[ -x $py ]] || py=python3
echo "soak: ${seconds}s, output in $out"
exec "$py" scripts/soak.py --duration "$seconds" --out "$out" \
  --reload-every "${RELOAD_EVERY:-30}" --restart-every "${RESTART_EVERY:-120}"
