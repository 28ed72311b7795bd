#!/usr/bin/env bash
# Runs a drill scenario (config/drills/*.yaml, docs/drills.md) against a local setup made for
# it: two bulwark-testd backends in capacity mode, a redis-server when one is installed, and
# Bulwark in front of them with every resilience control on (the config is printed with -v).
# Each process listens on an ephemeral loopback port and is stopped at the end.
#
# Usage: scripts/drill.sh SCENARIO.yaml [bulwark-drill options: --report F --json F --set K=V ...]
# Env:   BULWARK_BIN, BULWARK_TESTD, BULWARK_DRILL  the binaries (default: build-release/,
#                                                   built or brought up to date with CMake)
#        DRILL_CAPACITY (4), DRILL_SERVICE_MS (10)  each backend serves that many requests at
#                                                   once, each for that long (400 requests/s)
#        DRILL_VERBOSE=1                            print the Bulwark config and its log
# The scenario gets these variables: target, admin, metrics, backend_a, backend_b (URLs),
# backend_a_pid, backend_b_pid, redis_pid (0 without Redis), bulwark_pid.
# Exit status: bulwark-drill's (0 objectives held, 1 one failed, 2 bad scenario, 3 could not run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[[ $# -ge 1 ]] || { sed -n '2,16p' "$0"; exit 2; }
scenario=$1; shift

if [[ -z ${BULWARK_BIN:-} || -z ${BULWARK_TESTD:-} || -z ${BULWARK_DRILL:-} ]]; then
  # Build (or bring up to date) the three binaries in build-release/, so a drill never runs
  # a stale backend or proxy.
  # shellcheck source=scripts/deps.sh
  source "$root/scripts/deps.sh"
  install_packages $BULWARK_BUILD_PACKAGES
  if [[ -f $root/build-release/CMakeCache.txt ]]; then
    cmake -S "$root" -B "$root/build-release" >/dev/null  # picks up new sources and targets
  else
    cmake -S "$root" -B "$root/build-release" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
  fi
  cmake --build "$root/build-release" -j"$(nproc)" --target bulwark bulwark-testd bulwark-drill >/dev/null
fi
BULWARK_BIN=${BULWARK_BIN:-$root/build-release/bulwark}
BULWARK_TESTD=${BULWARK_TESTD:-$root/build-release/bulwark-testd}
BULWARK_DRILL=${BULWARK_DRILL:-$root/build-release/bulwark-drill}

work=$(mktemp -d)
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { /usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
start_backend() {  # NAME -> "PORT PID"
  "$BULWARK_TESTD" --port 0 --name "$1" --capacity "${DRILL_CAPACITY:-4}" \
    --service-ms "${DRILL_SERVICE_MS:-10}" > "$work/$1.out" 2>&1 &
  local pid=$! port=""
  pids+=("$pid")
  for _ in $(seq 100); do
    port=$(sed -n 's/^PORT //p' "$work/$1.out"); [[ -n $port ]] && break; sleep 0.05
  done
  [[ -n $port ]] || { echo "drill.sh: backend $1 did not start" >&2; cat "$work/$1.out" >&2; exit 3; }
  echo "$port $pid"
}
read -r port_a pid_a < <(start_backend a)
pids+=("$pid_a")
read -r port_b pid_b < <(start_backend b)
pids+=("$pid_b")

redis_pid=0 redis_block="" scope=local
if command -v redis-server >/dev/null; then
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no > "$work/redis.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break; sleep 0.05
  done
  redis_block="redis: { address: 127.0.0.1:$redis_port, timeout: 20ms }"
  scope=global
fi

port=$(free_port) admin=$(free_port)
cat > "$work/bulwark.yaml" <<YAML
admin: { listen: 127.0.0.1:$admin }
workers: 1
access_log: { path: "off" }
$redis_block
listeners:
  - name: drill
    listen: 127.0.0.1:$port
    routes:
      - name: app
        match: { prefix: / }
        upstream: app
        timeout: 2s
        rate_limit: { rate: 100/s, burst: 100, key: header:x-api-key, scope: $scope, on_redis_failure: local }
        retry:
          attempts: 3
          on: [connect-failure, reset, gateway-error, timeout]
          per_try_timeout: 250ms
          backoff: { base: 10ms, max: 50ms }
upstreams:
  - name: app
    endpoints: [127.0.0.1:$port_a, 127.0.0.1:$port_b]
    balance: least_request
    connect_timeout: 250ms
    circuit_breaker: { consecutive_failures: 5, open_for: 2s, max_open_for: 4s }
    health_check: { type: http, path: /healthz, interval: 500ms, timeout: 250ms, unhealthy_threshold: 2, healthy_threshold: 1 }
    load_shedding: { algorithm: gradient2, queue: { size: 100, timeout: 50ms }, priority_header: x-priority }
YAML
[[ -n ${DRILL_VERBOSE:-} ]] && cat "$work/bulwark.yaml" >&2
"$BULWARK_BIN" -c "$work/bulwark.yaml" > "$work/bulwark.log" 2>&1 &
bulwark_pid=$!
pids+=("$bulwark_pid")
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05
done
kill -0 "$bulwark_pid" 2>/dev/null || { echo "drill.sh: bulwark did not start:" >&2; cat "$work/bulwark.log" >&2; exit 3; }

set +e
"$BULWARK_DRILL" "$scenario" \
  --set "target=http://127.0.0.1:$port/" --set "admin=http://127.0.0.1:$admin" \
  --set "metrics=http://127.0.0.1:$admin/metrics" \
  --set "backend_a=http://127.0.0.1:$port_a" --set "backend_b=http://127.0.0.1:$port_b" \
  --set "backend_a_pid=$pid_a" --set "backend_b_pid=$pid_b" \
  --set "redis_pid=$redis_pid" --set "bulwark_pid=$bulwark_pid" "$@"
rc=$?
set -e
[[ -n ${DRILL_VERBOSE:-} ]] && cat "$work/bulwark.log" >&2
exit $rc
