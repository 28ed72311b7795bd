#!/usr/bin/env bash
# HTTP/2 clients side by side on loopback, in one run: h2load (64 streams over 8 connections,
# cleartext h2 with prior knowledge) against HAProxy (bind ... proto h2), NGINX (listen ...
# http2) and Bulwark (protocols: [h2c]), each one worker in front of the same backend: NGINX
# speaking HTTP/1.1 (--backend h1), or nghttpd speaking h2c (--backend h2: HAProxy's server
# has `proto h2`, Bulwark's upstream `protocol: h2`; NGINX is left out, as nginx-light cannot
# proxy to an HTTP/2 backend). Prints per proxy requests/s, succeeded/total and proxy CPU
# microseconds per request (user+sys of its processes / requests done): compare the ratios
# within one run.
#
# With --callgrind, HAProxy and Bulwark run under valgrind's callgrind (cache simulation) one
# after the other instead: user-space instructions, I1 and D1 misses per request over
# CG_REQUESTS requests after a warm-up, counts that repeat on a noisy machine where CPU time
# does not (the kernel's share is not counted).
#
# Usage: scripts/bench_h2.sh [--bulwark build-release/bulwark] [--features basic|all] [--backend h1|h2] [--callgrind]
# Env: DUR (s per round, default 8), ROUNDS (default 3), CLIENTS (8), STREAMS (8 per client),
#      CG_REQUESTS (20000)
set -euo pipefail
cd "$(dirname "$0")/.."
BULWARK=build-release/bulwark FEATURES=all BACKEND=h1 CALLGRIND=0
while [[ $# -gt 0 ]]; do case $1 in
  --bulwark) BULWARK=$2; shift 2;; --features) FEATURES=$2; shift 2;; --backend) BACKEND=$2; shift 2;;
  --callgrind) CALLGRIND=1; shift;;
  *) echo "unknown argument $1" >&2; exit 2;; esac; done
source scripts/deps.sh
install_packages haproxy nginx-light nghttp2-client nghttp2-server
((CALLGRIND)) && install_packages valgrind
[[ -x $BULWARK ]] || { echo "no Bulwark binary at $BULWARK (cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release && cmake --build build-release)" >&2; exit 2; }
DUR=${DUR:-8}; ROUNDS=${ROUNDS:-3}; CLIENTS=${CLIENTS:-8}; STREAMS=${STREAMS:-8}
D=$(mktemp -d); trap 'kill $(cat $D/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.2; rm -rf $D' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
BACK=$(port); HA=$(port); NG=$(port); ME=$(port); ADMIN=$(port)
cat > $D/backend.conf <<C
worker_processes 1; daemon off; pid $D/nb.pidfile; error_log $D/nb.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACK; location / { return 200 "hello from backend\n"; } } }
C
cat > $D/ngproxy.conf <<C
worker_processes 1; daemon off; pid $D/np.pidfile; error_log $D/np.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; http2_max_requests 1000000;
  upstream be { server 127.0.0.1:$BACK max_fails=3 fail_timeout=10s; keepalive 64; }
  server { listen 127.0.0.1:$NG http2; location / { proxy_pass http://be; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_next_upstream error timeout http_502 http_503; } } }
C
cat > $D/haproxy.cfg <<C
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  retries 2
  option redispatch
  http-reuse always
frontend fe
  bind 127.0.0.1:$HA proto h2
  default_backend be
backend be
  server s1 127.0.0.1:$BACK check inter 1s fall 3 rise 2 maxconn 1000$([[ $BACKEND == h2 ]] && echo " proto h2")
C
{ cat <<Y
admin: { listen: 127.0.0.1:$ADMIN }
workers: 1
access_log: { path: "off" }
listeners:
  - name: bench
    listen: 127.0.0.1:$ME
    protocols: [h2c]
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
Y
[[ $BACKEND == h2 ]] && echo "    protocol: h2"
if [[ $FEATURES == all ]]; then cat <<Y
    pool: { max_connections: 1024, max_idle: 128 }
    circuit_breaker: { consecutive_failures: 5 }
    health_check: { type: $([[ $BACKEND == h2 ]] && echo tcp || echo http), path: /, interval: 1s, timeout: 1s }
    load_shedding: { algorithm: gradient2, max_limit: 1000 }
Y
fi; } > $D/bulwark.yaml
if [[ $BACKEND == h2 ]]; then
  mkdir -p $D/www && printf 'hello from backend\n' > $D/www/index.html
  nghttpd --no-tls -d $D/www $BACK > /dev/null 2>&1 & echo $! > $D/nb.pid
else
  nginx -c $D/backend.conf -p $D 2>/dev/null & echo $! > $D/nb.pid
fi
if ((CALLGRIND)); then
  N=${CG_REQUESTS:-20000}
  # cg NAME PORT COMMAND...: the command under callgrind; counters zeroed after a warm-up.
  cg() { local name=$1 port=$2 pid i; shift 2
    valgrind --tool=callgrind --cache-sim=yes --callgrind-out-file=$D/cg.$name "$@" > $D/cg.$name.log 2>&1 &
    pid=$!; echo $pid > $D/cg.pid
    for ((i = 0; i < 60; i++)); do curl -sf --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.5; done
    h2load -n 5000 -c "$CLIENTS" -m "$STREAMS" -t 1 "http://127.0.0.1:$port/" > /dev/null 2>&1 || true
    callgrind_control -z $pid > /dev/null 2>&1
    h2load -n "$N" -c "$CLIENTS" -m "$STREAMS" -t 1 "http://127.0.0.1:$port/" > $D/h2load.out 2>&1 || true
    callgrind_control -d $pid > /dev/null 2>&1; sleep 1; kill $pid; wait $pid 2>/dev/null || true
    callgrind_annotate $D/cg.$name.1 2>/dev/null | awk -v n=$name -v req="$N" \
      -v ok="$(awk '/^requests:/{print $8}' $D/h2load.out)" '/PROGRAM TOTALS/{
        for (i = 1; i <= 11; i++) gsub(",", "", $i)  # Ir Dr Dw I1mr D1mr D1mw, each with its (%)
        printf "%-8s succeeded=%s/%s instructions_per_req=%d I1_misses_per_req=%d D1_misses_per_req=%d\n",
          n, ok, req, $1 / req, $7 / req, ($9 + $11) / req }'; }
  echo "callgrind: h2load -c $CLIENTS -m $STREAMS, $N requests after 5000, features $FEATURES, backend $BACKEND"
  cg haproxy $HA haproxy -q -f $D/haproxy.cfg
  cg bulwark $ME "$BULWARK" -c $D/bulwark.yaml
  exit 0
fi
nginx -c $D/ngproxy.conf -p $D 2>/dev/null & echo $! > $D/np.pid
haproxy -q -f $D/haproxy.cfg & echo $! > $D/ha.pid
"$BULWARK" -c $D/bulwark.yaml > $D/me.log 2>&1 & echo $! > $D/me.pid
sleep 1.5
kill -0 "$(cat $D/me.pid)" 2>/dev/null || { echo "bulwark exited:" >&2; cat $D/me.log >&2; exit 1; }
cpu() { local t=0 p; for p in "$@"; do [[ -r /proc/$p/stat ]] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
run() { local pids="$3 $(pgrep -P "$3" | tr '\n' ' ')"; local c0 c1; c0=$(cpu $pids)
  h2load -D "$DUR" -c "$CLIENTS" -m "$STREAMS" -t 1 "http://127.0.0.1:$1/" > $D/h2load.out 2>&1 || true
  c1=$(cpu $pids)
  awk -v n="$2" -v cpu=$((c1-c0)) -v hz="$(getconf CLK_TCK)" '
    /^finished in/{rps=$4} /^requests:/{total=$2; done=$6; ok=$8}
    END{printf "%-8s rps=%-10s succeeded=%s/%s cpu_us_per_req=%.2f\n", n, rps, ok, done, (done>0? cpu*1e6/hz/done : 0)}' $D/h2load.out; }
echo "h2load -c $CLIENTS -m $STREAMS, $DUR s rounds, features $FEATURES, backend $BACKEND"
for ((i = 1; i <= ROUNDS; i++)); do
  run $HA haproxy "$(cat $D/ha.pid)"
  [[ $BACKEND == h2 ]] || run $NG nginx "$(cat $D/np.pid)"
  run $ME bulwark "$(cat $D/me.pid)"
done
