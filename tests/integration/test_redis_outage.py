"""Global rate limits when Redis misbehaves, against a real redis-server started here: a hung
(SIGSTOPped) Redis is not asked again every time the reconnect's TCP handshake succeeds
against its kernel backlog; an unreachable Redis is logged at start; on_redis_failure: deny
replies say that Redis failed (detail and metric) instead of looking like a quota breach; and
waiters answered while the connection goes away do not re-enter the limiter."""
import os
import shutil
import signal
import socket
import subprocess
import time
import unittest

from harness import SANITIZED, Bulwark, Reader, Testd, free_port, problem, request, wait_for
from test_rate_limit_global import Redis

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
redis: {{ address: 127.0.0.1:{redis}, timeout: {redis_timeout} }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - name: global
        match: {{ prefix: / }}
        upstream: app
        rate_limit: {{ rate: {rate}, burst: {burst}, key: route, scope: global, on_redis_failure: {on_failure} }}
upstreams:
  - name: app
    endpoints: [{upstream}]
"""


def evalsha_calls(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"],
                         capture_output=True, text=True, timeout=5).stdout
    for line in out.splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def redis_lines(proxy):
    return [l for l in proxy.stderr_text().splitlines() if "redis" in l]


@unittest.skipUnless(shutil.which("redis-server"), "redis-server is not installed")
class RedisOutage(unittest.TestCase):
    def setUp(self):
        self.backend = Testd()
        self.redis = None
        self.proxy = None

    def tearDown(self):
        code = self.proxy.stop() if self.proxy else 0
        self.backend.stop()
        if self.redis:
            try:
                os.kill(self.redis.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.redis.kill()
        # A sanitizer report, a crash or a leak shows here.
        self.assertIn(code, (0, None), self.proxy.stderr_text()[-3000:] if self.proxy else "")

    def start(self, redis_port, on_failure="local", redis_timeout="20ms", rate="1000/s",
              burst=1000):
        self.proxy = Bulwark(TEMPLATE, upstream=self.backend.address, redis=redis_port,
                             redis_timeout=redis_timeout, rate=rate, burst=burst,
                             on_failure=on_failure)

    def test_hung_redis_is_not_asked_again_across_reconnects(self):
        self.redis = Redis(free_port())
        self.start(self.redis.port)
        wait_for(lambda: any(l.endswith(" connected") for l in redis_lines(self.proxy)),
                 what="the proxy connected to Redis")
        s = socket.create_connection(("127.0.0.1", self.proxy.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = Reader(s)

        def get():
            start = time.perf_counter()
            s.sendall(b"GET /g HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, _ = reader.read_response()
            self.assertEqual(status, 200)
            return time.perf_counter() - start

        for _ in range(20):
            get()
        self.assertGreaterEqual(evalsha_calls(self.redis.port), 19)
        lines_before = len(redis_lines(self.proxy))
        errors_before = self.proxy.metric("bulwark_redis_errors_total")

        os.kill(self.redis.proc.pid, signal.SIGSTOP)
        latencies = []
        start = time.time()
        while time.time() - start < 3.0:
            latencies.append(get())
            time.sleep(0.002)
        # A decision that waited out redis.timeout (20 ms) is a stall. Only the failures that
        # stop the asking should stall; the reconnects every few hundred ms must not bring
        # requests back to the hung Redis (before: about 18 stalls a second).
        stalls = sum(1 for t in latencies if t >= 0.018)
        errors = self.proxy.metric("bulwark_redis_errors_total") - errors_before
        new_lines = redis_lines(self.proxy)[lines_before:]
        print("Redis hung for 3 s: %d requests, %d stalled, %d Redis errors, %d log lines"
              % (len(latencies), stalls, errors, len(new_lines)))
        self.assertLessEqual(stalls, 3 + (3 if SANITIZED else 1))
        self.assertLessEqual(len(new_lines), 2, new_lines)  # the outage, logged once
        self.assertLessEqual(errors, 3 + 10)  # the failures, then one per handshake attempt

        # Back: the proxy finds it answers again and asks it again.
        os.kill(self.redis.proc.pid, signal.SIGCONT)
        wait_for(lambda: redis_lines(self.proxy)[-1].endswith(" connected"), timeout=8,
                 what="the proxy reconnected")
        calls = evalsha_calls(self.redis.port)
        time.sleep(1.1)  # the pause after the failures has ended in any case
        for _ in range(10):
            get()
        self.assertGreaterEqual(evalsha_calls(self.redis.port) - calls, 10)
        s.close()

    def test_unreachable_at_start_is_logged_and_requests_fall_back(self):
        closed = free_port()
        self.start(closed)
        wait_for(lambda: any("unreachable at start" in l for l in redis_lines(self.proxy)),
                 what="a log line saying Redis is unreachable")
        for _ in range(5):
            status, h, _ = request(self.proxy.port, "GET", "/g")
            self.assertEqual(status, 200)  # on_redis_failure: local
        self.assertEqual(len([l for l in redis_lines(self.proxy) if "unreachable" in l]), 1)

    def test_deny_on_redis_failure_is_told_apart_from_a_quota_breach(self):
        self.start(free_port(), on_failure="deny")
        for _ in range(4):
            status, h, body = request(self.proxy.port, "GET", "/g")
            self.assertEqual((status, h["x-bulwark-reason"]), (429, "rate-limited"))
            self.assertIn("Redis is unavailable", problem(body)["detail"])
        self.assertEqual(self.proxy.metric("bulwark_ratelimit_decisions_total", route="global",
                                           decision="limited_redis_failure"), 4)
        self.assertEqual(self.proxy.metric("bulwark_ratelimit_decisions_total", route="global",
                                           decision="limited"), 0)

    def test_waiters_answered_as_the_connection_breaks_do_not_reenter(self):
        # Pipelined requests on one connection; the first waits for Redis (its writes paused),
        # which then closes the connection. That waiter is answered (deny: 429 at once) while
        # hiredis tears the connection down, so the next request is parsed and asks Redis right
        # inside that teardown, where hiredis refuses commands. Each request must get exactly
        # one answer, nothing may fire later, and no bulkhead slot may be left taken.
        self.redis = Redis(free_port())
        self.start(self.redis.port, on_failure="deny", redis_timeout="1500ms", rate="1000/s")
        wait_for(lambda: any(l.endswith(" connected") for l in redis_lines(self.proxy)),
                 what="the proxy connected to Redis")
        self.assertEqual(request(self.proxy.port, "GET", "/warm")[0], 200)
        cli = ["redis-cli", "-p", str(self.redis.port)]
        subprocess.run(cli + ["CLIENT", "PAUSE", "3000", "WRITE"], check=True, capture_output=True)
        s = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)
        s.sendall(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\n" * 5)
        time.sleep(0.3)  # the first one is waiting for Redis (for up to 1.5 s)
        subprocess.run(cli + ["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"], check=True,
                       capture_output=True)
        reader = Reader(s)
        start = time.time()
        statuses = [reader.read_response()[0] for _ in range(5)]
        self.assertEqual(statuses, [429] * 5)
        self.assertLess(time.time() - start, 1.0)  # answered as the connection broke
        # Past the old Redis deadline: no second answer, no crash, no slot held.
        s.settimeout(2.0)
        try:
            extra = s.recv(1024)
        except socket.timeout:
            extra = b"(nothing)"
        self.assertEqual(extra, b"(nothing)")
        self.assertIsNone(self.proxy.proc.poll(), self.proxy.stderr_text()[-2000:])
        self.assertEqual(self.proxy.metric("bulwark_inflight_requests", upstream="app"), 0)
        s.sendall(b"GET /p2 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(reader.read_response()[0], (200, 429))
        s.close()

if __name__ == "__main__":
    unittest.main()
