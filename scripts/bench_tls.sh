#!/usr/bin/env bash
# TLS cost side by side, on loopback, in one run: HAProxy and Bulwark, one worker each,
# terminate TLS from wrk and originate TLS to the same NGINX HTTPS backend (certificate
# verified against a throw-away CA, SNI localhost). Two measures per proxy and round:
#   keepalive   wrk -t1 -cCONN over kept-alive TLS connections: proxy CPU microseconds per
#               request (user+sys of the proxy process / requests completed)
#   handshakes  wrk with "Connection: close": every request is a new client connection and
#               a full TLS handshake on the listener side; proxy CPU per handshake and
#               handshakes per second per core (1e6 / CPU microseconds per handshake)
# Upstream connections are pooled by both proxies in both measures. Compare ratios within one
# run, never absolute numbers across runs (the machines are shared and noisy).
#
#   scripts/bench_tls.sh [BULWARK_BINARY]        (default: builds build-release/bulwark)
# Env: DUR (s per run, default 8), CONN (default 64), HS_CONN (default 16), ROUNDS (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_packages $BULWARK_BUILD_PACKAGES openssl wrk haproxy nginx-light
BULWARK=${1:-}
if [[ -z $BULWARK ]]; then
  cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
  cmake --build build-release -j"$(nproc)" --target bulwark >/dev/null
  BULWARK=build-release/bulwark
fi
D=$(mktemp -d)
trap 'kill $(cat $D/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.2; rm -rf $D' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
BACK=$(port) HA=$(port) ME=$(port) ADMIN=$(port)
DUR=${DUR:-8} CONN=${CONN:-64} HS_CONN=${HS_CONN:-16} ROUNDS=${ROUNDS:-3}

# A CA and one server certificate (EC P-256, localhost and 127.0.0.1) for all three servers.
(
  cd $D
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -keyout ca.key -out ca.pem 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout server.key -out server.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.cnf
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile san.cnf -out server.pem 2>/dev/null
  cat server.pem server.key > server-combined.pem
)

cat > $D/backend.conf <<C
worker_processes 1; daemon off; pid $D/nb.pidfile; error_log $D/nb.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACK ssl; ssl_certificate $D/server.pem; ssl_certificate_key $D/server.key;
    location / { return 200 "hello from backend\n"; } } }
C
cat > $D/haproxy.cfg <<C
global
  nbthread 1
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HA ssl crt $D/server-combined.pem alpn http/1.1
  default_backend be
backend be
  server s1 127.0.0.1:$BACK ssl verify required ca-file $D/ca.pem sni str(localhost) verifyhost localhost alpn http/1.1 maxconn 1000
C
cat > $D/bulwark.yaml <<Y
admin: { listen: 127.0.0.1:$ADMIN }
workers: 1
access_log: { path: "off" }
listeners:
  - name: bench
    listen: 127.0.0.1:$ME
    tls: { cert: $D/server.pem, key: $D/server.key }
    routes:
      - name: all
        upstream: be
upstreams:
  - name: be
    endpoints: [localhost:$BACK]
    tls: { ca: $D/ca.pem }
    pool: { max_connections: 1024, max_idle: 128 }
Y

nginx -c $D/backend.conf -p $D 2>/dev/null & echo $! > $D/nb.pid
haproxy -q -f $D/haproxy.cfg & echo $! > $D/ha.pid
$BULWARK -c $D/bulwark.yaml > $D/me.log 2>&1 & echo $! > $D/me.pid
sleep 1.5
for p in nb ha me; do
  kill -0 "$(cat $D/$p.pid)" 2>/dev/null || { echo "$p exited:" >&2; cat $D/me.log $D/nb.err >&2; exit 1; }
done
curl -sf --cacert $D/ca.pem "https://localhost:$HA/" >/dev/null || { echo "haproxy does not answer" >&2; exit 1; }
curl -sf --cacert $D/ca.pem "https://localhost:$ME/" >/dev/null || { echo "bulwark does not answer" >&2; cat $D/me.log >&2; exit 1; }

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
run() {  # PORT NAME PID MODE
  local c0 c1 extra=() conns=$CONN
  [[ $4 == handshakes ]] && extra=(-H "Connection: close") && conns=$HS_CONN
  c0=$(cpu "$3")
  wrk -t1 -c$conns -d${DUR}s --latency "${extra[@]}" "https://localhost:$1/" > $D/wrk.out 2>&1 || true
  c1=$(cpu "$3")
  awk -v n="$2" -v m="$4" -v cpu=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" '
    /requests in/{req=$1} /Requests\/sec/{r=$2} /^ +50%/{p50=$2} /^ +99%/{p99=$2}
    /Non-2xx/{e=$NF} /Socket errors/{se=$0}
    END{us = (req > 0 ? cpu * 1e6 / hz / req : 0)
        printf "%-8s %-10s rps=%-10s p50=%-8s p99=%-8s non2xx=%-6s cpu_us_per_req=%.2f", n, m, r, p50, p99, (e==""?0:e), us
        if (m == "handshakes") printf " handshakes_per_core_s=%.0f", (us > 0 ? 1e6 / us : 0)
        printf " %s\n", se}' $D/wrk.out
}
for ((i = 1; i <= ROUNDS; i++)); do
  for mode in keepalive handshakes; do
    run $HA haproxy "$(cat $D/ha.pid)" $mode
    run $ME bulwark "$(cat $D/me.pid)" $mode
  done
done
