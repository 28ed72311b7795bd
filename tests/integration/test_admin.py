"""The admin listener: /healthz, /ready, /metrics, /status, /config; and the access log."""
import json
import signal
import time
import unittest

from harness import Bulwark, ProxyTest, Reader, Testd, connect, request, wait_for


class Admin(ProxyTest):
    def admin(self, path):
        return request(self.proxy.admin_port, "GET", path)

    def test_healthz_and_ready(self):
        self.assertEqual(self.admin("/healthz")[0], 200)
        self.assertEqual(self.admin("/ready")[0], 200)
        self.assertEqual(self.admin("/nope")[0], 404)

    def test_metrics_after_traffic(self):
        for _ in range(3):
            self.assertEqual(self.get("/m")[0], 200)
        self.assertEqual(self.get("/m?status=503")[0], 503)
        status, h, body = self.admin("/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(h["content-type"].startswith("text/plain"))
        text = body.decode()
        self.assertIn('bulwark_build_info{version="0.1.0"} 1', text)
        p = self.proxy
        self.assertGreaterEqual(p.metric("bulwark_requests_total", listener="inbound", route="all",
                                         upstream="app", code="200"), 3)
        self.assertEqual(p.metric_eventually(1, "bulwark_requests_total", route="all", code="503"), 1)
        self.assertGreaterEqual(p.metric("bulwark_request_duration_seconds_count", route="all", upstream="app"), 4)
        self.assertGreaterEqual(p.metric("bulwark_request_duration_seconds_bucket", route="all", le="+Inf"), 4)
        self.assertGreaterEqual(p.metric("bulwark_upstream_requests_total", upstream="app",
                                         endpoint=self.backend.address, outcome="success"), 3)
        self.assertEqual(p.metric("bulwark_upstream_requests_total", upstream="app", outcome="failure"), 1)
        self.assertIsNotNone(p.metric("bulwark_downstream_connections", listener="inbound"))
        self.assertEqual(p.metric("bulwark_pool_connections", upstream="app", state="idle"), 1)
        for family in ("bulwark_local_replies_total", "bulwark_inflight_requests",
                       "bulwark_pool_connects_total"):
            self.assertIn("# TYPE " + family, text)

    def test_config_is_the_effective_config(self):
        status, h, body = self.admin("/config")
        self.assertEqual(status, 200)
        c = json.loads(body)
        self.assertEqual(c["listeners"][0]["name"], "inbound")
        self.assertEqual(c["listeners"][0]["timeouts"]["header"], "10000ms")
        self.assertEqual(c["upstreams"][0]["endpoints"], [self.backend.address])
        self.assertEqual(c["upstreams"][0]["pool"]["max_idle"], 128)

    def test_status(self):
        status, _, body = self.admin("/status")
        s = json.loads(body)
        self.assertEqual(s["upstreams"][0]["name"], "app")
        self.assertEqual(s["upstreams"][0]["endpoints"][0]["address"], self.backend.address)
        self.assertIn("in_flight", s["upstreams"][0]["endpoints"][0])

    def test_access_log_line(self):
        self.get("/logged/path?secret=1", headers={"X-Request-Id": "log-me"})
        entries = [e for e in self.proxy.access_log(
            until=lambda es: any(e["request_id"] == "log-me" for e in es)) if e["request_id"] == "log-me"]
        self.assertEqual(len(entries), 1)
        e = entries[0]
        self.assertEqual(e["method"], "GET")
        self.assertEqual(e["path"], "/logged/path")
        self.assertEqual(e["status"], 200)
        self.assertEqual(e["route"], "all")
        self.assertEqual(e["upstream"], "app")
        self.assertEqual(e["endpoint"], self.backend.address)
        self.assertEqual(e["client"], "127.0.0.1")
        for key in ("time", "duration", "bytes_in", "bytes_out", "reason", "attempts"):
            self.assertIn(key, e)



ADMIN_LIMITS = """
admin: {{ listen: 127.0.0.1:{admin}, max_connections: 4, timeouts: {{ header: 300ms, idle: 1s }} }}
access_log: {{ path: "off" }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - name: all
        match: {{ prefix: / }}
        upstream: app
upstreams:
  - name: app
    endpoints: [{upstream}]
"""


class AdminConnections(unittest.TestCase):
    """Admin connections are kept alive, answer pipelined requests in order, and are bounded
    in head size, time and number; shutdown closes them."""

    def setUp(self):
        self.backend = Testd()
        self.proxy = Bulwark(ADMIN_LIMITS, upstream=self.backend.address)

    def tearDown(self):
        code = self.proxy.stop()
        self.backend.stop()
        self.assertIn(code, (0, None), self.proxy.stderr_text())

    def test_keep_alive_and_pipelining(self):
        s = connect(self.proxy.admin_port)
        r = Reader(s)
        s.sendall(b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n")
        status, h, body = r.read_response()
        self.assertEqual((status, body), (200, b"ready\n"))
        self.assertNotIn("connection", h)  # kept alive: no Connection: close
        # Three requests in one write: three answers, in order, on the same connection.
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"HEAD /ready HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(r.read_response()[0], 200)
        self.assertEqual(r.read_response()[0], 404)
        status, h, body = r.read_response(head_request=True)
        self.assertEqual((status, body, h["content-length"]), (200, b"", "6"))
        # Connection: close is honoured.
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        status, h, body = r.read_response()
        self.assertEqual((status, h.get("connection")), (200, "close"))
        self.assertIn(b"bulwark_build_info", body)
        self.assertEqual(r.read_to_eof(), b"")
        s.close()

    def test_request_head_is_bounded(self):
        s = connect(self.proxy.admin_port)
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = Reader(s)
        status, h, _ = r.read_response()
        self.assertEqual((status, h.get("connection")), (431, "close"))
        s.close()

    def test_half_sent_request_times_out(self):
        s = connect(self.proxy.admin_port)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\n")  # never finished
        start = time.time()
        status, h, _ = Reader(s).read_response()
        self.assertEqual((status, h.get("connection")), (408, "close"))
        self.assertLess(time.time() - start, 2)
        s.close()

    def test_idle_connection_is_closed(self):
        s = connect(self.proxy.admin_port)
        start = time.time()
        s.settimeout(5)
        self.assertEqual(s.recv(1), b"")
        self.assertLess(time.time() - start, 3)
        s.close()

    def test_connections_are_bounded(self):
        held = [connect(self.proxy.admin_port) for _ in range(4)]
        for s in held:  # each is served: the server has them all
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(Reader(s).read_response()[0], 200)
        # A fifth makes room by closing the connection idle the longest (the first), and is
        # served. (Refusal when none is idle: test_review_admin.py.)
        extra = connect(self.proxy.admin_port)
        held[0].settimeout(3)
        self.assertEqual(held[0].recv(1), b"")
        extra.sendall(b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(Reader(extra).read_response()[0], 200)
        extra.close()
        for s in held:
            s.close()

    def test_shutdown_closes_admin_connections(self):
        # Regression: a half-sent admin request kept the process alive after SIGINT/SIGTERM
        # until the client left.
        s = connect(self.proxy.admin_port)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\n")
        idle = connect(self.proxy.admin_port)
        time.sleep(0.1)
        start = time.time()
        self.proxy.signal(signal.SIGTERM)
        self.assertEqual(self.proxy.wait(5), 0)
        self.assertLess(time.time() - start, 1.5)
        s.close()
        idle.close()


if __name__ == "__main__":
    unittest.main()
