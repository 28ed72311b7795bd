#!/usr/bin/env bash
# Side-by-side cost of Bulwark, HAProxy and NGINX on loopback, in one run:
#  1. throughput: each proxy (one worker) in front of the same NGINX backend, driven by
#     wrk; prints requests/s, p50, p99, non-2xx and proxy CPU microseconds per request
#     (user+sys of the proxy's processes / requests completed);
#  2. memory: RSS of each proxy holding N idle keep-alive client connections.
# Compare ratios within one run only. Usage:
#   scripts/bench.sh [--features basic|all] [--idle N] [--baseline BULWARK_BINARY]
# N defaults to 10,000, or less when the descriptor hard limit cannot hold that many for
# HAProxy (which reserves two per connection); --idle 0 skips the memory test.
# --baseline runs another Bulwark build (an earlier commit's, say) in the same rounds, as
# "baseline", with the same configuration: a before/after that the machine's noise hits alike.
# Each throughput row also counts how often the proxy and the backend went to sleep
# (voluntary context switches of their threads per 1,000 requests): each sleep is a wake-up
# that somebody's write pays for.
# Env: DUR (s per run, default 8), CONN (default 64), ROUNDS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_packages $BULWARK_BUILD_PACKAGES wrk haproxy nginx-light python3
FEATURES=basic IDLE="" BASELINE=""
while [[ $# -gt 0 ]]; do case $1 in
  --features) FEATURES=$2; shift 2;; --idle) IDLE=$2; shift 2;;
  --baseline) BASELINE=$(realpath "$2"); shift 2;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target bulwark >/dev/null
BULWARK=$PWD/build-release/bulwark

D=$(mktemp -d)
trap 'for f in $D/*.pid; do kill $(cat $f) 2>/dev/null || true; done; sleep 0.3; rm -rf $D' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
BACK=$(port) HA=$(port) NG=$(port) BW=$(port) ADMIN=$(port) BW0=$(port) ADMIN0=$(port)
DUR=${DUR:-8} CONN=${CONN:-64} ROUNDS=${ROUNDS:-2}
ulimit -n "$(ulimit -Hn)"
# HAProxy reserves two descriptors per connection: stay within the hard limit.
HARD=$(ulimit -Hn)
[[ $HARD == unlimited ]] && HARD=1048576
MAX_IDLE=$(( (HARD - 2000) / 2 - 200 ))
[[ -z $IDLE ]] && IDLE=$(( MAX_IDLE < 10000 ? MAX_IDLE : 10000 ))
# At least 8,000: HAProxy with `maxconn 200` (--idle 0) served a fifth of its usual rate here.
HA_MAXCONN=$(( IDLE + 200 < 8000 ? 8000 : IDLE + 200 ))

cat > $D/backend.conf <<C
worker_processes 1; daemon off; pid $D/backend.nginxpid; error_log $D/backend.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACK; location / { return 200 "hello from backend\n"; } } }
C
cat > $D/nginx.conf <<C
worker_processes 1; daemon off; pid $D/nginx.nginxpid; error_log $D/nginx.err;
worker_rlimit_nofile 65536;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  upstream be { server 127.0.0.1:$BACK max_fails=3 fail_timeout=10s; keepalive 64; }
  server { listen 127.0.0.1:$NG; location / { proxy_pass http://be; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_next_upstream error timeout http_502 http_503; } } }
C
cat > $D/haproxy.cfg <<C
global
  nbthread 1
  maxconn $HA_MAXCONN
defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 30s
  timeout http-keep-alive 120s
  retries 2
  option redispatch
  http-reuse always
frontend fe
  bind 127.0.0.1:$HA
  maxconn $HA_MAXCONN
  default_backend be
backend be
  server s1 127.0.0.1:$BACK check inter 1s fall 3 rise 2 maxconn 1000
C
{ cat <<Y
admin: { listen: 127.0.0.1:$ADMIN }
workers: 1
access_log: { path: "off" }
listeners:
  - name: bench
    listen: 127.0.0.1:$BW
    timeouts: { idle: 120s }
    limits: { max_connections: 30000 }
    routes:
      - name: all
        match: { prefix: / }
        upstream: be
Y
if [[ $FEATURES == all ]]; then cat <<Y
        timeout: 15s
        rate_limit: { rate: 10000000/s, burst: 10000000, key: client_ip }
        retry: { attempts: 2, on: [connect-failure, reset, gateway-error] }
Y
fi
cat <<Y
upstreams:
  - name: be
    endpoints: [127.0.0.1:$BACK]
    pool: { max_connections: 1024, max_idle: 128 }
Y
if [[ $FEATURES == all ]]; then cat <<Y
    circuit_breaker: { consecutive_failures: 5 }
    health_check: { type: http, path: /, interval: 1s, timeout: 1s }
    load_shedding: { algorithm: gradient2, max_limit: 1000 }
Y
fi; } > $D/bulwark.yaml
# A build without load shedding refuses its block: measure everything else it has.
if ! "$BULWARK" --check -c $D/bulwark.yaml >/dev/null 2>$D/check.err; then
  if grep -q "load_shedding.*not supported by this build" $D/check.err; then
    echo "note: this build has no load shedding; measuring the other resilience features" >&2
    sed -i '/load_shedding:/d' $D/bulwark.yaml
  fi
  "$BULWARK" --check -c $D/bulwark.yaml >/dev/null
fi

nginx -c $D/backend.conf -p $D 2>/dev/null & echo $! > $D/backend.pid
nginx -c $D/nginx.conf -p $D 2>/dev/null & echo $! > $D/nginx.pid
haproxy -q -f $D/haproxy.cfg & echo $! > $D/haproxy.pid
"$BULWARK" -c $D/bulwark.yaml > $D/bulwark.log 2>&1 & echo $! > $D/bulwark.pid
if [[ -n $BASELINE ]]; then
  sed -e "s/127.0.0.1:$BW\$/127.0.0.1:$BW0/" -e "s/127.0.0.1:$ADMIN /127.0.0.1:$ADMIN0 /" \
    $D/bulwark.yaml > $D/baseline.yaml
  "$BASELINE" -c $D/baseline.yaml > $D/baseline.log 2>&1 & echo $! > $D/baseline.pid
fi
sleep 1.5

pids_of() { local p; p=$(cat $D/$1.pid); echo "$p $(pgrep -P "$p" | tr '\n' ' ')"; }
cpu_ticks() { local t=0 p; for p in "$@"; do [[ -r /proc/$p/stat ]] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
# Voluntary context switches (times it went to sleep) of every thread of the given processes.
sleeps() { local t=0 p f; for p in "$@"; do for f in /proc/$p/task/*/status; do
  [[ -r $f ]] && t=$((t + $(awk '/^voluntary_ctxt_switches/{print $2}' "$f"))); done; done; echo $t; }
run() { # port name pidfile-name
  local pids back c0 c1 s0 s1 b0 b1; pids=$(pids_of "$3"); back=$(pids_of backend)
  c0=$(cpu_ticks $pids) s0=$(sleeps $pids) b0=$(sleeps $back)
  wrk -t1 -c"$CONN" -d"${DUR}s" --latency "http://127.0.0.1:$1/" > $D/wrk.out 2>&1 || true
  c1=$(cpu_ticks $pids) s1=$(sleeps $pids) b1=$(sleeps $back)
  awk -v n="$2" -v cpu=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v ps=$((s1 - s0)) -v bs=$((b1 - b0)) \
    '/requests in/{req=$1} /Requests\/sec/{r=$2} /^ +50%/{p50=$2} /^ +99%/{p99=$2} /Non-2xx/{e=$NF}
    END{printf "%-8s rps=%-10s p50=%-8s p99=%-8s non2xx=%-6s cpu_us_per_req=%.2f sleeps_per_1k: proxy=%.0f backend=%.0f\n",
      n, r, p50, p99, (e==""?0:e), (req>0? cpu*1e6/hz/req : 0), (req>0? ps*1000/req : 0), (req>0? bs*1000/req : 0)}' $D/wrk.out; }

echo "== throughput (features: $FEATURES, $ROUNDS rounds of ${DUR}s, $CONN connections)"
for ((i = 1; i <= ROUNDS; i++)); do
  run $BACK direct backend
  run $HA haproxy haproxy
  run $NG nginx nginx
  run $BW bulwark bulwark
  [[ -n $BASELINE ]] && run $BW0 baseline baseline
done
[[ $IDLE == 0 ]] && exit 0
echo "== memory with $IDLE idle keep-alive client connections"
for target in "haproxy $HA" "nginx $NG" "bulwark $BW"; do
  set -- $target
  printf "%-8s " "$1"
  python3 scripts/idle_connections.py "$2" "$IDLE" $(pids_of "$1")
done
