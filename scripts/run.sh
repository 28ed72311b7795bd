#!/usr/bin/env bash
# Installs what is missing (Debian 12), builds Bulwark (Release), and runs it in front of
# the bundled demo backend (bulwark-testd) with config/bulwark.yaml. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_packages $BULWARK_BUILD_PACKAGES curl

cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target bulwark bulwark-testd

./build-release/bulwark --check -c config/bulwark.yaml
./build-release/bulwark-testd --port 3000 --name demo >/dev/null &
backend=$!
./build-release/bulwark -c config/bulwark.yaml &
proxy=$!
cleanup() {
  set +e  # the processes may be gone already (Ctrl-C reaches the whole group)
  kill -INT "$proxy" 2>/dev/null
  kill "$backend" 2>/dev/null
  wait 2>/dev/null
}
trap cleanup INT TERM EXIT

for _ in $(seq 50); do curl -sf http://127.0.0.1:9901/ready >/dev/null 2>&1 && break; sleep 0.1; done
cat <<MSG

Bulwark is running in front of the demo backend. Try:
  curl -i http://127.0.0.1:8080/api/hello                  proxied to the demo backend
  curl -i 'http://127.0.0.1:8080/api/x?status=503&delay=200'   the backend answers 503 after 200 ms
  curl -i 'http://127.0.0.1:8080/api/x?size=100000&chunked=1'  a 100 kB chunked body
  curl -i 'http://127.0.0.1:8080/api/x?reset=before'           the backend resets: 502 upstream-reset
  curl -s http://127.0.0.1:9901/metrics | grep bulwark_          Prometheus metrics
  curl -s http://127.0.0.1:9901/status                          upstream state
Access log lines (JSON) follow below. Ctrl-C stops.

MSG
wait $proxy
