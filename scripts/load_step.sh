#!/usr/bin/env bash
# A load-shedding experiment in one command: bulwark-testd in capacity mode (C workers, each
# request MS ms of work, an unbounded FIFO queue behind them), optionally Bulwark in front of
# it, bulwark-load offering a fixed open-loop rate with a priority mix, and the backend's
# capacity cut at one point of the run ("capacity halves mid-run"). Prints the bulwark-load
# summary (JSON) and a per-second table: offered, responses by status class, client-side
# failures, p50/p99 of 2xx latency (from the scheduled start).
# Usage:
#   scripts/load_step.sh [--config TEMPLATE.yaml] [--rate R] [--duration S] [--capacity C]
#       [--service-ms MS] [--step-at S] [--step-capacity C2] [--mix M] [--timeout-ms MS]
#       [--out DIR] [--build DIR]
# TEMPLATE.yaml: a Bulwark config with {port}, {admin} and {upstream} placeholders (Python
# str.format, as in tests/integration/harness.py; double literal braces). Without --config
# the load goes straight to testd.
# Defaults: 250 req/s for 20 s; capacity 16 x 50 ms (320 req/s), cut to 8 (160 req/s) at 10 s;
# mix critical=0.1,normal=0.5,sheddable=0.4 sent as x-priority; timeout 5000 ms; binaries from
# build/ (built if missing). Results stay in DIR (default: a new temp dir): load.csv,
# summary.json, and the configs and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="" RATE=250 DURATION=20 CAP=16 SERVICE=50 STEP_AT=10 STEP_CAP="" TIMEOUT=5000
MIX=critical=0.1,normal=0.5,sheddable=0.4 OUT="" BUILD=build
while [[ $# -gt 0 ]]; do case $1 in
  --config) CONFIG=$2; shift 2;; --rate) RATE=$2; shift 2;; --duration) DURATION=$2; shift 2;;
  --capacity) CAP=$2; shift 2;; --service-ms) SERVICE=$2; shift 2;;
  --step-at) STEP_AT=$2; shift 2;; --step-capacity) STEP_CAP=$2; shift 2;;
  --mix) MIX=$2; shift 2;; --timeout-ms) TIMEOUT=$2; shift 2;;
  --out) OUT=$2; shift 2;; --build) BUILD=$2; shift 2;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done
[[ -z $STEP_CAP ]] && STEP_CAP=$(( CAP / 2 > 0 ? CAP / 2 : 1 ))
targets=(bulwark-testd bulwark-load)
[[ -n $CONFIG ]] && targets+=(bulwark)
for t in "${targets[@]}"; do
  if [[ ! -x $BUILD/$t ]]; then
    [[ -f $BUILD/CMakeCache.txt ]] ||
      cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD" -j1 --target "${targets[@]}" >/dev/null
    break
  fi
done
[[ -z $OUT ]] && OUT=$(mktemp -d /tmp/load-step.XXXXXX)
mkdir -p "$OUT"

pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT INT TERM
port() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

"$BUILD/bulwark-testd" --port 0 --name capacity --capacity "$CAP" --service-ms "$SERVICE" \
  >"$OUT/testd.out" 2>"$OUT/testd.err" &
pids+=($!)
for _ in $(seq 50); do grep -q '^PORT ' "$OUT/testd.out" 2>/dev/null && break; sleep 0.1; done
TESTD_PORT=$(awk '/^PORT /{print $2}' "$OUT/testd.out")
[[ -n $TESTD_PORT ]] || { echo "testd did not start: $(cat "$OUT/testd.err")" >&2; exit 1; }
TARGET=$TESTD_PORT

if [[ -n $CONFIG ]]; then
  PROXY_PORT=$(port) ADMIN_PORT=$(port)
  python3 - "$CONFIG" "$OUT/bulwark.yaml" "$PROXY_PORT" "$ADMIN_PORT" "127.0.0.1:$TESTD_PORT" <<'PY'
import sys
template, out, port, admin, upstream = sys.argv[1:]
with open(template) as f, open(out, "w") as g:
    g.write(f.read().format(port=port, admin=admin, upstream=upstream))
PY
  "$BUILD/bulwark" -c "$OUT/bulwark.yaml" >"$OUT/bulwark.out" 2>"$OUT/bulwark.err" &
  pids+=($!)
  ready() { curl -sf "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1; }
  for _ in $(seq 100); do ready && break; sleep 0.1; done
  ready || { echo "bulwark not ready: $(cat "$OUT/bulwark.err")" >&2; exit 1; }
  TARGET=$PROXY_PORT
fi

echo "testd 127.0.0.1:$TESTD_PORT capacity $CAP x ${SERVICE} ms -> $STEP_CAP at ${STEP_AT}s;" \
  "load $RATE/s for ${DURATION}s on port $TARGET; results in $OUT" >&2
step_url="http://127.0.0.1:$TESTD_PORT/__capacity?c=$STEP_CAP"
( sleep "$STEP_AT"; curl -s "$step_url" >"$OUT/step.json" ) &
pids+=($!)
mix_args=()
[[ -n $MIX ]] && mix_args=(--mix "$MIX" --priority-header x-priority)
"$BUILD/bulwark-load" --url "http://127.0.0.1:$TARGET/work" --rate "$RATE" --duration "$DURATION" \
  --timeout-ms "$TIMEOUT" "${mix_args[@]}" --out "$OUT/load.csv" | tee "$OUT/summary.json"

python3 - "$OUT/load.csv" <<'PY'
import csv, sys
from collections import defaultdict
rows = defaultdict(list)
with open(sys.argv[1]) as f:
    for r in csv.DictReader(f):
        rows[int(float(r["sched_ms"]) // 1000)].append(r)
def pct(v, p):
    if not v:
        return "-"
    v = sorted(v)
    return "%.1f" % (v[max(0, int(-(-p * len(v) // 1)) - 1)] / 1000)
print("%4s %7s %6s %6s %6s %6s %8s %9s %9s" % (
    "s", "offered", "2xx", "429", "503", "other", "client", "p50 ms", "p99 ms"))
for s in sorted(rows):
    rs = rows[s]
    st = [int(r["status"]) for r in rs]
    ok = [int(r["latency_us"]) for r in rs if 200 <= int(r["status"]) < 300]
    print("%4d %7d %6d %6d %6d %6d %8d %9s %9s" % (
        s, len(rs), len(ok), st.count(429), st.count(503),
        sum(1 for x in st if x and not 200 <= x < 300 and x not in (429, 503)), st.count(0),
        pct(ok, 0.5), pct(ok, 0.99)))
PY
