"""Fault injection (a route's `fault` block): aborts answered by Bulwark with the configured
status and reason fault-injected, never reaching the backend or its breaker; delays that hold
the request and then forward it; percentages that hold; x-bulwark-fault honoured only where
the route allows it; counted in bulwark_faults_injected_total."""
import socket
import time
import unittest

from harness import Bulwark, Reader, Testd, request

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - name: aborted
        match: {{ prefix: /aborted }}
        upstream: app
        fault: {{ abort: {{ percent: 100%, status: 418 }} }}
      - name: delayed
        match: {{ prefix: /delayed }}
        upstream: app
        fault: {{ delay: {{ percent: 100%, duration: 300ms }} }}
      - name: some
        match: {{ prefix: /some }}
        upstream: app
        fault: {{ abort: {{ percent: 25%, status: 503 }} }}
      - name: too_slow
        match: {{ prefix: /too_slow }}
        upstream: app
        timeout: 200ms
        fault: {{ delay: {{ percent: 100%, duration: 2s }} }}
      - name: drills
        match: {{ prefix: /drills }}
        upstream: app
        fault: {{ allow_header: true }}
      - name: plain
        match: {{ prefix: / }}
        upstream: app
upstreams:
  - name: app
    endpoints: [{upstream}]
    circuit_breaker: {{ consecutive_failures: 1, open_for: 30s }}
"""


class FaultInjection(unittest.TestCase):
    def setUp(self):
        self.backend = Testd()
        self.proxy = Bulwark(TEMPLATE, upstream=self.backend.address)

    def tearDown(self):
        self.proxy.stop()
        self.backend.stop()

    def seen(self):
        return self.backend.stats()["requests"]

    def test_abort_answers_the_configured_status_without_the_backend_or_its_breaker(self):
        before = self.seen()
        for _ in range(5):
            status, headers, _ = request(self.proxy.port, "GET", "/aborted/x")
            self.assertEqual(status, 418)
            self.assertEqual(headers.get("x-bulwark-reason"), "fault-injected")
        self.assertEqual(self.seen(), before + 1, "the backend saw none of them (+1: the stats call)")
        # Not the endpoint's failure: the breaker (one failure opens it) stays closed.
        self.assertEqual(request(self.proxy.port, "GET", "/plain")[0], 200)
        self.assertEqual(self.proxy.metric("bulwark_circuit_state", upstream="app", state="closed"), 1)
        self.assertEqual(self.proxy.metric("bulwark_faults_injected_total", route="aborted", kind="abort"), 5)
        self.assertEqual(self.proxy.metric("bulwark_local_replies_total", route="aborted",
                                           reason="fault-injected"), 5)

    def test_delay_holds_the_request_then_forwards_it(self):
        started = time.time()
        status, headers, _ = request(self.proxy.port, "GET", "/delayed/x")
        took = time.time() - started
        self.assertEqual(status, 200)
        self.assertIsNotNone(headers.get("x-testd-name"), "answered by the backend")
        self.assertGreaterEqual(took, 0.29)
        self.assertLess(took, 2.0)
        self.assertEqual(self.proxy.metric("bulwark_faults_injected_total", route="delayed", kind="delay"), 1)
        # Undelayed routes are not slowed down.
        started = time.time()
        self.assertEqual(request(self.proxy.port, "GET", "/plain")[0], 200)
        self.assertLess(time.time() - started, 0.25)

    def test_a_delay_longer_than_the_route_timeout_ends_in_the_timeout(self):
        started = time.time()
        status, headers, _ = request(self.proxy.port, "GET", "/too_slow")
        took = time.time() - started
        self.assertEqual(status, 504)
        self.assertEqual(headers.get("x-bulwark-reason"), "upstream-timeout")
        self.assertLess(took, 1.5, "the route timeout (200ms) ends the delay (2s)")

    def test_the_percentage_holds(self):
        sock = socket.create_connection(("127.0.0.1", self.proxy.port))
        reader = Reader(sock)
        aborted = 0
        n = 400
        for _ in range(n):
            sock.sendall(b"GET /some HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = reader.read_response()
            if status == 503:
                self.assertEqual(headers.get("x-bulwark-reason"), "fault-injected")
                aborted += 1
            else:
                self.assertEqual(status, 200)
        sock.close()
        # 25 % of 400: 100 expected; 60..140 is beyond 4.5 standard deviations either way.
        self.assertTrue(60 <= aborted <= 140, "aborted %d of %d at 25%%" % (aborted, n))
        self.assertEqual(self.proxy.metric("bulwark_faults_injected_total", route="some", kind="abort"), aborted)

    def test_the_drill_header_works_only_where_the_route_allows_it(self):
        abort = {"x-bulwark-fault": "abort=502"}
        status, headers, _ = request(self.proxy.port, "GET", "/drills", headers=abort)
        self.assertEqual((status, headers.get("x-bulwark-reason")), (502, "fault-injected"))
        started = time.time()
        status, _, _ = request(self.proxy.port, "GET", "/drills", headers={"x-bulwark-fault": "delay=250ms"})
        self.assertEqual(status, 200)
        self.assertGreaterEqual(time.time() - started, 0.24)
        status, headers, _ = request(self.proxy.port, "GET", "/drills",
                                     headers={"x-bulwark-fault": "delay=100ms, abort=503"})
        self.assertEqual((status, headers.get("x-bulwark-reason")), (503, "fault-injected"))
        # Without a header, a route with allow_header only and no percentages injects nothing.
        self.assertEqual(request(self.proxy.port, "GET", "/drills")[0], 200)
        # Values it does not understand are ignored, not half applied.
        for bad in ("abort=99", "abort=503x", "delay=forever", "delay=10m", "explode=1", "abort"):
            self.assertEqual(request(self.proxy.port, "GET", "/drills", headers={"x-bulwark-fault": bad})[0],
                             200, bad)
        # A route without allow_header ignores it.
        self.assertEqual(request(self.proxy.port, "GET", "/plain", headers=abort)[0], 200)
        self.assertEqual(request(self.proxy.port, "GET", "/delayed", headers=abort)[0], 200)

    def test_config_shows_the_block(self):
        import json
        config = json.loads(request(self.proxy.admin_port, "GET", "/config")[2])
        routes = {r["name"]: r for r in config["listeners"][0]["routes"]}
        self.assertEqual(routes["aborted"]["fault"], {"abort": {"percent": "100%", "status": 418},
                                                      "allow_header": False})
        self.assertEqual(routes["drills"]["fault"], {"allow_header": True})
        self.assertNotIn("fault", routes["plain"])


if __name__ == "__main__":
    unittest.main()
