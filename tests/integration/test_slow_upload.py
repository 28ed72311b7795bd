"""A slow uploader is the client's fault: a request whose body has not arrived when the route
timeout, the per-try timeout or timeouts.body_idle fires gets 408 request-timeout, and nothing
counts against the endpoint or its breaker (before: 504 upstream-timeout, counted, and three
such clients opened a healthy endpoint's breaker for everyone)."""
import socket
import threading
import time
import unittest

from harness import Bulwark, Reader, Testd, connect, problem, request, wait_for

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    timeouts: {{ body_idle: {body_idle} }}
    routes:
      - name: all
        match: {{ prefix: / }}
        upstream: app
        timeout: {timeout}
        {retry}
upstreams:
  - name: app
    endpoints: [{upstream}]
    circuit_breaker: {{ consecutive_failures: 3, open_for: 30s }}
"""


class SlowUpload(unittest.TestCase):
    def setUp(self):
        self.backend = Testd()
        self.proxy = None

    def tearDown(self):
        code = self.proxy.stop() if self.proxy else 0
        self.backend.stop()
        self.assertIn(code, (0, None), self.proxy.stderr_text()[-3000:] if self.proxy else "")

    def start(self, timeout, body_idle="30s", retry=""):
        self.proxy = Bulwark(TEMPLATE, upstream=self.backend.address, timeout=timeout,
                             body_idle=body_idle, retry=retry)

    def dribblers(self, n=3):
        """`n` clients each declaring a 100-byte body and sending one byte. Returns, per
        client, (status, reason, detail, seconds until the answer)."""
        results = [None] * n

        def client(i):
            s = connect(self.proxy.port, timeout=10)
            start = time.time()
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
            try:
                status, h, body = Reader(s).read_response()
                results[i] = (status, h.get("x-bulwark-reason"), problem(body)["detail"],
                              time.time() - start)
            except (EOFError, socket.timeout) as e:
                results[i] = ("no answer: %r" % e, None, None, time.time() - start)
            finally:
                s.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        return results

    def assert_endpoint_not_blamed(self):
        self.assertEqual(self.proxy.metric("bulwark_circuit_state", state="closed"), 1)
        self.assertEqual(self.proxy.metric("bulwark_circuit_transitions_total", to="open"), 0)
        self.assertEqual(self.proxy.metric("bulwark_upstream_requests_total", outcome="timeout"), 0)
        self.assertEqual(self.proxy.metric_eventually(3, "bulwark_local_replies_total",
                                                      reason="request-timeout"), 3)
        self.assertEqual(self.proxy.metric("bulwark_local_replies_total", reason="upstream-timeout"), None)
        status, h, _ = request(self.proxy.port, "GET", "/after")
        self.assertEqual(status, 200, h)

    def test_route_timeout_with_the_body_missing_is_408(self):
        self.start(timeout="500ms")
        for status, reason, detail, took in self.dribblers():
            self.assertEqual((status, reason), (408, "request-timeout"))
            self.assertIn("request body", detail)
            self.assertLess(took, 3)
        self.assert_endpoint_not_blamed()

    def test_per_try_timeout_with_the_body_missing_is_408(self):
        self.start(timeout="5s", retry="retry: { attempts: 2, on: [timeout], per_try_timeout: 300ms, "
                                       "methods: all }")
        for status, reason, detail, took in self.dribblers():
            self.assertEqual((status, reason), (408, "request-timeout"))
            self.assertLess(took, 3)
        self.assert_endpoint_not_blamed()
        self.assertEqual(self.proxy.metric("bulwark_retries_total", reason="timeout"), 0)

    def test_body_idle_bounds_a_dribble_without_a_route_timeout(self):
        self.start(timeout="0", body_idle="400ms")
        for status, reason, detail, took in self.dribblers():
            self.assertEqual((status, reason), (408, "request-timeout"))
            self.assertIn("body_idle", detail)
            self.assertGreater(took, 0.35)
            self.assertLess(took, 3)
        self.assert_endpoint_not_blamed()

    def test_body_idle_is_a_gap_not_a_total(self):
        # A slow but steady upload (a byte every 100 ms, 1.5 s in all) outlasts body_idle
        # (400 ms) and gets through.
        self.start(timeout="0", body_idle="400ms")
        s = connect(self.proxy.port, timeout=10)
        s.sendall(b"POST /echo?echo=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n")
        for i in range(15):
            time.sleep(0.1)
            s.sendall(b"abcdefghijklmno"[i:i + 1])
        status, h, body = Reader(s).read_response()
        s.close()
        self.assertEqual((status, body), (200, b"abcdefghijklmno"))
        self.assertEqual(self.proxy.metric("bulwark_local_replies_total", reason="request-timeout"), None)


if __name__ == "__main__":
    unittest.main()
