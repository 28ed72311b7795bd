#!/usr/bin/env python3
"""Runs the real bulwark in front of bulwark-testd with a config that turns on every block
that adds metrics (rate limits local and global, retry, circuit breaker, health check, load
shedding, a host-name endpoint, Redis, a TLS listener with a throw-away certificate), sends a
little traffic (200s, a 503 whose retry the budget refuses, a 404 no-route, 429s, connect
failures until a breaker opens, 503 circuit-open, one HTTPS request), and writes GET /metrics to the file given. Used by
scripts/validate-observability.sh; environment as for tests/integration/harness.py
(BULWARK_BIN, BULWARK_TESTD).

Usage: observability_scrape.py OUT_FILE
"""
import http.client
import os
import shutil
import ssl
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import harness  # noqa: E402
from tls_backend import Pki  # noqa: E402

CONFIG = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
redis: {{ address: 127.0.0.1:{redis_port}, timeout: 20ms }}
listeners:
  - name: public
    listen: 127.0.0.1:{port}
    protocols: [http1, h2c]
    routes:
      - name: api
        match: {{ prefix: /api }}
        upstream: app
        retry:
          attempts: 2
          on: [5xx]
          budget: {{ ratio: 0%, min_per_second: 0 }}
      - name: limited
        match: {{ prefix: /limited }}
        upstream: app
        rate_limit: {{ rate: 1/m, burst: 1, key: route }}
      - name: shared
        match: {{ prefix: /shared }}
        upstream: app
        rate_limit: {{ rate: 1/m, burst: 1, key: route, scope: global, on_redis_failure: local }}
      - name: down
        match: {{ prefix: /down }}
        upstream: down
      - name: grpc
        match: {{ prefix: /grpc }}
        upstream: grpc
  - name: secure
    listen: 127.0.0.1:{tls_port}
    tls: {{ cert: "{cert}", key: "{key}" }}
    routes:
      - name: secure-all
        upstream: app
upstreams:
  - name: app
    endpoints: [{upstream}]
    circuit_breaker: {{ consecutive_failures: 50 }}
    health_check: {{ interval: 200ms, timeout: 500ms }}
    load_shedding: {{ algorithm: fixed, initial_limit: 50, min_limit: 50, max_limit: 50 }}
  - name: down
    endpoints: [localhost:{dead_port}]
    connect_timeout: 200ms
    circuit_breaker: {{ consecutive_failures: 2, open_for: 1m }}
  - name: grpc
    endpoints: [localhost:{dead_port}]
    protocol: h2
    connect_timeout: 200ms
"""


def get(proxy, path):
    status, _, _ = harness.request(proxy.port, "GET", path)
    return status


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    testd = harness.Testd()
    proxy = None
    pki = Pki()  # a throw-away CA and certificate for the TLS listener
    try:
        tls_port = harness.free_port()
        proxy = harness.Bulwark(CONFIG, upstream=testd.address, dead_port=harness.free_port(),
                                redis_port=harness.free_port(), tls_port=tls_port,
                                cert=pki.server_cert, key=pki.server_key)
        seen = {}

        def note(path, expect):
            status = get(proxy, path)
            seen.setdefault(path, []).append(status)
            return status == expect

        for _ in range(5):
            note("/api/ok", 200)
        note("/api/fail?status=503", 503)     # retry on 5xx refused by the budget
        note("/nowhere", 404)                 # no-route
        for path in ("/limited", "/shared"):  # burst 1: the second is 429
            note(path, 200)
            note(path, 429)
        # connect failures until the breakers of "down" open, then 503 circuit-open
        for _ in range(10):
            if note("/down", 503):
                break
        harness.wait_for(lambda: proxy.metric("bulwark_health_checks_total", result="success"),
                         what="a health check")
        # One HTTPS request through the TLS listener (bulwark_tls_* samples).
        https = http.client.HTTPSConnection("localhost", tls_port, timeout=10,
                                            context=ssl.create_default_context(cafile=pki.ca))
        https.request("GET", "/tls")
        seen["/tls"] = [https.getresponse().status]
        https.close()
        problems = []
        for path, expect in (("/api/ok", 200), ("/api/fail?status=503", 503), ("/nowhere", 404),
                             ("/limited", 429), ("/shared", 429), ("/down", 503), ("/tls", 200)):
            if expect not in seen[path]:
                problems.append("%s: expected a %d among %s" % (path, expect, seen[path]))
        if proxy.metric("bulwark_circuit_state", upstream="down", state="open") is None or \
                proxy.metric("bulwark_circuit_state", upstream="down", state="open") < 1:
            problems.append("no breaker of upstream down is open")
        time.sleep(0.1)  # counters settle just after the response
        with open(out, "w") as f:
            f.write(proxy.metrics())
        if problems:
            sys.exit("observability_scrape: traffic did not go as planned: " + "; ".join(problems)
                     + "\n" + proxy.stderr_text())
        print("observability_scrape: %s (%s)" % (out, ", ".join(
            "%s -> %s" % (p, "/".join(map(str, s))) for p, s in seen.items())))
    finally:
        if proxy:
            proxy.stop()
            shutil.rmtree(proxy.dir, ignore_errors=True)
        testd.stop()
        pki.cleanup()


if __name__ == "__main__":
    main()
