"""Global rate limits through a real redis-server started here: two Bulwark processes share
one quota; a hung or dead Redis costs no request more than redis.timeout, the fallback
applies, and the proxies use Redis again once it is back."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest

from harness import SANITIZED, Bulwark, Reader, Testd, free_port, wait_for

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
redis: {{ address: 127.0.0.1:{redis}, timeout: 20ms }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - name: global
        match: {{ prefix: / }}
        upstream: app
        rate_limit: {{ rate: 10/s, burst: 10, key: route, scope: global, on_redis_failure: local }}
upstreams:
  - name: app
    endpoints: [{upstream}]
"""


class Redis:
    def __init__(self, port):
        self.port = port
        self.start()

    def start(self):
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--save", "",
                                      "--appendonly", "no", "--bind", "127.0.0.1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def keys(self):
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--raw", "KEYS", "bulwark:*"],
                             capture_output=True, text=True, timeout=5).stdout
        return [k for k in out.split() if k]

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = Reader(self.sock)

    def get(self, with_headers=False):
        start = time.perf_counter()
        self.sock.sendall(b"GET /g HTTP/1.1\r\nHost: x\r\n\r\n")
        status, h, _ = self.reader.read_response()
        if with_headers:
            return status, h
        return status, time.perf_counter() - start


@unittest.skipUnless(shutil.which("redis-server"), "redis-server is not installed")
class GlobalRateLimit(unittest.TestCase):
    def setUp(self):
        self.redis = Redis(free_port())
        self.backend = Testd()
        self.proxies = [Bulwark(TEMPLATE, upstream=self.backend.address, redis=self.redis.port)
                        for _ in range(2)]
        self.clients = [Client(p.port) for p in self.proxies]

    def tearDown(self):
        for c in self.clients:
            c.sock.close()
        for p in self.proxies:
            p.stop()
        self.backend.stop()
        self.redis.kill()

    def run_for(self, seconds):
        admitted, latencies = 0, []
        start = time.time()
        while time.time() - start < seconds:
            for c in self.clients:
                status, took = c.get()
                self.assertIn(status, (200, 429))
                admitted += status == 200
                latencies.append(took)
            time.sleep(0.01)
        return admitted, latencies

    def test_redis_arithmetic_matches_the_local_bucket(self):
        # The same scenario as the local bucket's unit and integration tests: a burst of 10,
        # remaining counting down 9..0, then 429 with a token back within a second.
        seen = [self.clients[0].get(with_headers=True) for _ in range(11)]
        self.assertEqual([s for s, _ in seen], [200] * 10 + [429])
        self.assertEqual([int(h["ratelimit"].split("r=")[1].split(";")[0]) for _, h in seen[:10]],
                         list(range(9, -1, -1)))
        self.assertEqual(seen[10][1]["retry-after"], "1")
        self.assertEqual(self.proxies[0].metric("bulwark_ratelimit_decisions_total", scope="global",
                                                decision="limited"), 1)

    def test_quota_shared_then_redis_fails_then_recovers(self):
        # Shared: two proxies together get one quota (10 + 10/s), not one each.
        admitted, _ = self.run_for(2.0)
        print("two proxies, 2 s, global 10/s burst 10: %d admitted" % admitted, file=sys.stderr)
        self.assertGreaterEqual(admitted, 26)
        self.assertLessEqual(admitted, 34)
        self.assertTrue(self.redis.keys())

        # Both proxies know from Redis that they are two (redis.replicas: auto).
        for p in self.proxies:
            wait_for(lambda: "2 Bulwark replica(s) share" in p.stderr_text(), timeout=5,
                     what="the replica count")
        # Hung Redis: each proxy waits at most redis.timeout, then its breaker stops asking.
        os.kill(self.redis.proc.pid, signal.SIGSTOP)
        time.sleep(1.1)  # the quota refills meanwhile
        admitted, latencies = self.run_for(1.0)
        worst = max(latencies)
        print("Redis hung: %d admitted in 1 s, slowest request %.1f ms" % (admitted, worst * 1000),
              file=sys.stderr)
        # timeout + proxy time + this client's own overhead (more under sanitizers)
        self.assertLess(worst, 0.020 + (0.08 if SANITIZED else 0.02))
        # The local fallback: each proxy takes half the quota (5 + 5/s), so the two together
        # stay near one quota (10 + 10/s) instead of admitting two.
        self.assertGreaterEqual(admitted, 14)
        self.assertLessEqual(admitted, 26)
        errors = sum(p.metric("bulwark_redis_errors_total") for p in self.proxies)
        self.assertGreater(errors, 0)
        os.kill(self.redis.proc.pid, signal.SIGCONT)

        # Dead Redis: refused at once, same fallback.
        self.redis.kill()
        admitted, latencies = self.run_for(0.5)
        self.assertLess(max(latencies), 0.1 if SANITIZED else 0.04)

        # Back: the proxies reconnect by themselves and share the quota again. ("connected" is
        # logged when Redis answers after an outage: count the lines from here on.)
        def connected_lines(p):
            return sum(line.endswith(" connected") for line in p.stderr_text().splitlines())
        before = [connected_lines(p) for p in self.proxies]
        self.redis.start()
        deadline = time.time() + 15
        def reconnected(p):
            return connected_lines(p) > before[self.proxies.index(p)]
        while time.time() < deadline and not all(reconnected(p) for p in self.proxies):
            time.sleep(0.1)
        self.assertTrue(all(reconnected(p) for p in self.proxies), self.proxies[0].stderr_text()[-3000:])
        time.sleep(1.1)
        admitted, _ = self.run_for(2.0)
        print("after Redis returned: %d admitted in 2 s" % admitted, file=sys.stderr)
        self.assertLessEqual(admitted, 34)  # one quota again
        self.clients[0].get()
        self.assertTrue(self.redis.keys())


if __name__ == "__main__":
    unittest.main()
