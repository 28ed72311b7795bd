#!/usr/bin/env python3
"""Instructions per proxied request, counted by valgrind's callgrind: repeatable on a shared,
noisy machine where wall-clock timings are not (same binary, same input: same count).

Runs BUILD/bulwark under callgrind in front of BUILD/bulwark-testd with every resilience
feature of the benchmark config on (rate limit, retry, route timeout, breaker, health check,
load shedding),
sends N keep-alive GET requests on one connection, and reports
    (instructions for N2 requests - instructions for N1 requests) / (N2 - N1)
so start-up and shutdown cancel out. Several build directories compare side by side.

Usage: scripts/instructions_per_request.py [BUILD_DIR ...]   (default: build)
Needs: valgrind (apt-get install -y valgrind)."""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from harness import Reader, free_port  # noqa: E402

CONFIG = """
admin: {{ listen: 127.0.0.1:{admin} }}
workers: 1
access_log: {{ path: "off" }}
listeners:
  - name: bench
    listen: 127.0.0.1:{port}
    routes:
      - name: all
        match: {{ prefix: / }}
        upstream: be
        timeout: 15s
        rate_limit: {{ rate: 10000000/s, burst: 10000000, key: client_ip }}
        retry: {{ attempts: 2, on: [connect-failure, reset, gateway-error] }}
upstreams:
  - name: be
    endpoints: [127.0.0.1:{backend}]
    pool: {{ max_connections: 1024, max_idle: 128 }}
    circuit_breaker: {{ consecutive_failures: 5 }}
    health_check: {{ type: http, path: /, interval: 60s, timeout: 1s }}
    load_shedding: {{ algorithm: gradient2, max_limit: 1000 }}
"""
REQUEST = b"GET /x?size=100 HTTP/1.1\r\nHost: a\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


def instructions(build, requests):
    """Total instructions callgrind counts for a run of `requests` proxied requests."""
    testd = subprocess.Popen([os.path.join(build, "bulwark-testd"), "--port", "0"],
                             stdout=subprocess.PIPE)
    backend = int(testd.stdout.readline().split()[1])
    work = tempfile.mkdtemp(prefix="bulwark-ipr-")
    port, admin = free_port(), free_port()
    config = os.path.join(work, "bulwark.yaml")
    with open(config, "w") as f:
        f.write(CONFIG.format(port=port, admin=admin, backend=backend))
    out = os.path.join(work, "callgrind.out")
    proxy = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                              os.path.join(build, "bulwark"), "-c", config],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("bulwark did not start under valgrind")
                time.sleep(0.1)
        reader = Reader(s)
        for _ in range(requests):
            s.sendall(REQUEST)
            status = reader.read_response()[0]
            if status != 200:
                raise RuntimeError("status %d" % status)
        s.close()
        time.sleep(0.3)
    finally:
        proxy.send_signal(signal.SIGINT)
        proxy.wait()
        testd.kill()
        testd.wait()
    with open(out) as f:
        text = f.read()
    m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    return int(m.group(1))


def main():
    builds = sys.argv[1:] or [os.path.join(ROOT, "build")]
    n1, n2 = 500, 2500
    for build in builds:
        per_request = (instructions(build, n2) - instructions(build, n1)) / (n2 - n1)
        print("%-40s %8.0f instructions per request" % (build, per_request))


if __name__ == "__main__":
    main()
