"""Upstream failures become the documented local replies; a response that broke after it
started is never passed off as complete."""
import socket
import time
import unittest

from harness import Bulwark, Reader, Testd, connect, free_port, problem, request

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - name: dead
        match: {{ prefix: /dead }}
        upstream: dead
      - name: slow
        match: {{ prefix: /slow }}
        upstream: app
        timeout: 300ms
      - name: app
        match: {{ prefix: / }}
        upstream: app
upstreams:
  - name: app
    endpoints: [{upstream}]
  - name: dead
    endpoints: [{dead}]
    connect_timeout: 500ms
"""


class UpstreamFailures(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.backend = Testd()
        cls.dead = "127.0.0.1:%d" % free_port()  # nothing listens here
        cls.proxy = Bulwark(TEMPLATE, upstream=cls.backend.address, dead=cls.dead)

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        cls.backend.stop()

    def test_backend_down_is_502_connect_failure(self):
        start = time.time()
        status, h, body = request(self.proxy.port, "GET", "/dead/x")
        self.assertLess(time.time() - start, 2)
        self.assertEqual(status, 502)
        self.assertEqual(h["x-bulwark-reason"], "upstream-connect-failure")
        self.assertEqual(problem(body)["status"], 502)
        self.assertGreaterEqual(self.proxy.metric("bulwark_upstream_requests_total", upstream="dead",
                                                  outcome="connect_failure"), 1)
        self.assertGreaterEqual(self.proxy.metric("bulwark_pool_connects_total", upstream="dead",
                                                  result="failure"), 1)

    def test_reset_before_response_is_502_upstream_reset(self):
        status, h, _ = request(self.proxy.port, "GET", "/r?reset=before")
        self.assertEqual(status, 502)
        self.assertEqual(h["x-bulwark-reason"], "upstream-reset")

    def test_reset_mid_response_closes_the_client_connection(self):
        s = connect(self.proxy.port)
        s.sendall(b"GET /r?reset=after&size=2000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = Reader(s)
        _, status, headers = r.read_head()
        self.assertEqual(status, 200)
        length = int(dict(headers)["content-length"])
        with self.assertRaises((EOFError, ConnectionResetError)):
            r.read_exact(length)
        s.close()
        self.assertGreaterEqual(self.proxy.metric("bulwark_upstream_requests_total", upstream="app",
                                                  outcome="reset"), 1)

    def test_route_timeout_is_504(self):
        start = time.time()
        status, h, _ = request(self.proxy.port, "GET", "/slow?delay=2000")
        elapsed = time.time() - start
        self.assertEqual(status, 504)
        self.assertEqual(h["x-bulwark-reason"], "upstream-timeout")
        self.assertGreater(elapsed, 0.25)
        self.assertLess(elapsed, 1.5)
        # The proxy stays healthy for the next request.
        self.assertEqual(request(self.proxy.port, "GET", "/ok")[0], 200)

    def test_client_gone_mid_request_does_not_hurt_others(self):
        for _ in range(5):
            s = connect(self.proxy.port)
            s.sendall(b"GET /x?delay=200 HTTP/1.1\r\nHost: x\r\n\r\n")
            s.close()
            s = connect(self.proxy.port)
            s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        self.assertEqual(request(self.proxy.port, "GET", "/ok")[0], 200)
        time.sleep(0.5)
        self.assertEqual(self.proxy.metric_eventually(0, "bulwark_downstream_connections", listener="inbound"), 0)
        self.assertEqual(self.proxy.metric_eventually(0, "bulwark_inflight_requests", upstream="app"), 0)


if __name__ == "__main__":
    unittest.main()
