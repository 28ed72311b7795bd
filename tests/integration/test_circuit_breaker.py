"""Circuit breakers: a failing endpoint is ejected while the others serve with no client
errors, it is probed and closed again once it recovers, and when every endpoint is open
clients get 503 circuit-open at once."""
import json
import statistics
import sys
import threading
import time
import unittest

from harness import SANITIZED, Bulwark, Testd, request

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - name: all
        match: {{ prefix: / }}
        upstream: app
        timeout: 300ms
upstreams:
  - name: app
    endpoints: [{endpoints}]
    balance: round_robin
    circuit_breaker:
      consecutive_failures: 3
      open_for: {open_for}
      max_open_for: {max_open_for}
      half_open_requests: 1
      max_ejected: 50%
"""


class CircuitBreakers(unittest.TestCase):
    def setUp(self):
        self.backends = [Testd(name=n) for n in ("a", "b", "c")]
        self.proxy = Bulwark(TEMPLATE, open_for="2s", max_open_for="5s",
                             endpoints=", ".join(b.address for b in self.backends))
        self.bad = self.backends[2]

    def tearDown(self):
        self.proxy.stop()
        for b in self.backends:
            b.stop()

    def mode(self, query=""):
        request(self.bad.port, "GET", "/__mode" + query)

    def state(self, backend, st):
        return self.proxy.metric("bulwark_circuit_state", endpoint=backend.address, state=st)

    def trip(self):
        """Sends requests until the bad endpoint's breaker opens; returns the failures seen."""
        failures = 0
        for _ in range(40):
            status, h, _ = request(self.proxy.port, "GET", "/t")
            failures += status != 200
            if self.state(self.bad, "open") == 1:
                return failures
        self.fail("the breaker did not open")

    def assert_ejected(self, n=40):
        # Only while the breaker surely stays open (open_for 2 s, jitter -10 %), however slow
        # the machine is.
        start = time.time()
        names = []
        while len(names) < n and time.time() - start < 1.5:
            status, h, _ = request(self.proxy.port, "GET", "/e")
            self.assertEqual(status, 200)
            names.append(h["x-testd-name"])
        self.assertGreaterEqual(len(names), 10)
        self.assertNotIn("c", names)
        self.assertEqual(set(names), {"a", "b"})

    def recover(self):
        self.mode("")
        deadline = time.time() + 10
        while time.time() < deadline:
            request(self.proxy.port, "GET", "/r")
            if self.state(self.bad, "closed") == 1:
                break
            time.sleep(0.05)
        self.assertEqual(self.state(self.bad, "closed"), 1)
        names = [request(self.proxy.port, "GET", "/r")[1]["x-testd-name"] for _ in range(6)]
        self.assertIn("c", names)  # back in rotation

    def test_fail_eject_probe_recover_for_each_failure_kind(self):
        for query, expected in (("?status=500", 500), ("?reset=before", 502), ("?delay=2000", 504)):
            with self.subTest(query):
                self.mode(query)
                failures = self.trip()
                self.assertGreaterEqual(failures, 3)
                self.assertLessEqual(failures, 3)  # exactly the consecutive_failures
                self.assert_ejected()
                self.recover()
        opened = self.proxy.metric("bulwark_circuit_transitions_total", endpoint=self.bad.address, to="open")
        closed = self.proxy.metric("bulwark_circuit_transitions_total", endpoint=self.bad.address, to="closed")
        half = self.proxy.metric("bulwark_circuit_transitions_total", endpoint=self.bad.address, to="half_open")
        self.assertEqual((opened, closed), (3, 3))
        self.assertGreaterEqual(half, 3)
        self.assertIn("circuit closed -> open", self.proxy.stderr_text())
        status = json.loads(request(self.proxy.admin_port, "GET", "/status")[2])
        states = {e["address"]: e["breaker"]["state"] for e in status["upstreams"][0]["endpoints"]}
        self.assertEqual(set(states.values()), {"closed"})

    def test_failed_probe_reopens_for_longer(self):
        self.mode("?status=503")
        self.trip()
        first = json.loads(request(self.proxy.admin_port, "GET", "/status")[2])
        # Once open_for (2 s +/-10 %) has passed, the next request to c is a probe; it fails
        # and the breaker opens again.
        probed = False
        deadline = time.time() + 6
        while time.time() < deadline:
            request(self.proxy.port, "GET", "/p")
            half = self.proxy.metric("bulwark_circuit_transitions_total", endpoint=self.bad.address,
                                     to="half_open")
            if half >= 1 and self.state(self.bad, "open") == 1:
                probed = True
                break
            time.sleep(0.05)
        states = request(self.proxy.admin_port, "GET", "/status")[2]
        self.assertTrue(probed, states)
        status = json.loads(request(self.proxy.admin_port, "GET", "/status")[2])
        open_for = [e["breaker"]["open_for_ms"] for e in status["upstreams"][0]["endpoints"]
                    if e["address"] == self.bad.address][0]
        self.assertGreater(open_for, 2500)  # doubled: 4 s +/-10 %, minus the time since

    def test_all_open_fails_fast_with_retry_after(self):
        for b in self.backends:
            request(b.port, "GET", "/__mode?status=500")
        for _ in range(12):
            request(self.proxy.port, "GET", "/x")
        for b in self.backends:
            self.assertEqual(self.state(b, "open"), 1)
        before = self.backends[0].stats()["requests"]
        times = []
        for _ in range(200):
            start = time.perf_counter()
            status, h, body = request(self.proxy.port, "GET", "/x")
            times.append(time.perf_counter() - start)
            self.assertEqual(status, 503)
            self.assertEqual(h["x-bulwark-reason"], "circuit-open")
            self.assertIn(int(h["retry-after"]), (1, 2, 3))  # open_for 2 s + up to 10 % jitter
            self.assertEqual(json.loads(body)["status"], 503)
        # No upstream saw any of these (the stats call itself is one request).
        self.assertEqual(self.backends[0].stats()["requests"], before + 1)
        times.sort()
        p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]
        print("circuit-open replies, client-measured (connect+request+reply): p50 %.3f ms, p99 %.3f ms"
              % (p50 * 1000, p99 * 1000), file=sys.stderr)
        self.assertLess(p99, 0.2 if SANITIZED else 0.05)
        self.assertGreaterEqual(self.proxy.metric("bulwark_local_replies_total", reason="circuit-open"), 200)


class PanicMode(unittest.TestCase):
    def test_more_than_max_ejected_open_means_traffic_to_all(self):
        backends = [Testd(name=n) for n in ("a", "b", "c")]
        proxy = Bulwark(TEMPLATE, open_for="10s", max_open_for="10s", endpoints=", ".join(b.address for b in backends))
        try:
            for b in backends[1:]:
                request(b.port, "GET", "/__mode?status=500")
            for _ in range(30):
                request(proxy.port, "GET", "/x")
                if all(proxy.metric("bulwark_circuit_state", endpoint=b.address, state="open") == 1
                       for b in backends[1:]):
                    break
            self.assertEqual(proxy.metric("bulwark_upstream_panic", upstream="app"), 1)
            names = [request(proxy.port, "GET", "/y")[1].get("x-testd-name") for _ in range(9)]
            # 2 of 3 open > 50 %: the open ones get traffic again rather than a to overload "a".
            self.assertEqual(set(names), {"a", "b", "c"})
        finally:
            proxy.stop()
            for b in backends:
                b.stop()

HEALTH_TEMPLATE = TEMPLATE.replace("      max_ejected: 50%\n", """      max_ejected: 50%
      half_open_on_health_check: {early}
    health_check: {{ type: http, path: /healthz, interval: 200ms, timeout: 150ms }}
""")


class HealthCheckEndsOpen(unittest.TestCase):
    """An endpoint whose breaker opened recovers while its health checks pass: a check that
    started after the trip ends the open period (30 s here) and the next request probes it."""

    def run_case(self, early):
        backend = Testd(name="a")
        proxy = Bulwark(HEALTH_TEMPLATE, open_for="30s", max_open_for="30s", early=early,
                        endpoints=backend.address)
        try:
            request(backend.port, "GET", "/__mode?status=503")  # /healthz still answers 200
            for _ in range(10):
                request(proxy.port, "GET", "/x")
                if proxy.metric("bulwark_circuit_state", endpoint=backend.address, state="open") == 1:
                    break
            self.assertEqual(proxy.metric("bulwark_circuit_state", endpoint=backend.address, state="open"), 1)
            status, h, _ = request(proxy.port, "GET", "/x")
            self.assertEqual(status, 503)
            self.assertEqual(h.get("x-bulwark-reason"), "circuit-open")
            request(backend.port, "GET", "/__mode")  # recovered
            start = time.time()
            statuses = []
            while time.time() - start < 3:
                statuses.append(request(proxy.port, "GET", "/y")[0])
                if statuses[-1] == 200:
                    break
                time.sleep(0.05)
            log = proxy.stderr_text() if early == "true" else ""
            return time.time() - start, statuses, log
        finally:
            proxy.stop()
            backend.stop()

    def test_passing_check_half_opens_the_breaker(self):
        took, statuses, log = self.run_case("true")
        self.assertEqual(statuses[-1], 200, statuses)
        self.assertLess(took, 2.0)  # a check every 200 ms; without it, 30 s of circuit-open
        self.assertIn("health check passed; circuit open period ends early", log)

    def test_off_keeps_the_breaker_open(self):
        took, statuses, _ = self.run_case("false")
        self.assertEqual(set(statuses), {503}, statuses)


if __name__ == "__main__":
    unittest.main()
