"""Listener limits and request-smuggling defences: each answered with its local reply."""
import json
import socket
import time
import unittest

from harness import Bulwark, ProxyTest, Reader, Testd, connect, problem, wait_for

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    timeouts: {{ header: 500ms, idle: 700ms }}
    limits: {{ max_connections: 5, max_header_bytes: 2KiB, max_body_bytes: 1KiB }}
    routes:
      - name: api
        match: {{ prefix: /api }}
        upstream: app
upstreams:
  - name: app
    endpoints: [{upstream}]
"""


def exchange(port, raw, timeout=5):
    s = connect(port, timeout)
    s.sendall(raw)
    r = Reader(s)
    try:
        status, h, body = r.read_response()
    finally:
        pass
    return s, r, status, h, body


class Limits(ProxyTest):
    template = TEMPLATE

    def assertLocalReply(self, status, h, body, code, reason):
        self.assertEqual(status, code)
        self.assertEqual(h["x-bulwark-reason"], reason)
        self.assertEqual(h["content-type"], "application/problem+json")
        p = problem(body)
        self.assertEqual(p["status"], code)
        self.assertEqual(p["type"], "urn:bulwark:problem:" + reason)
        self.assertTrue(p["title"])
        self.assertTrue(p["detail"])

    def assertClosed(self, s):
        s.settimeout(5)
        try:
            self.assertEqual(s.recv(1), b"")
        except ConnectionResetError:
            pass
        s.close()

    def test_no_route_is_404_and_keeps_the_connection(self):
        s, r, status, h, body = exchange(self.proxy.port, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertLocalReply(status, h, body, 404, "no-route")
        self.assertTrue(h["x-request-id"])
        s.sendall(b"GET /api/ok HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(r.read_response()[0], 200)
        s.close()

    def test_header_timeout_is_408(self):
        s = connect(self.proxy.port)
        s.sendall(b"GET /api HTTP/1.1\r\nHost: x\r\n")
        start = time.time()
        status, h, body = Reader(s).read_response()
        self.assertLocalReply(status, h, body, 408, "request-timeout")
        self.assertLess(time.time() - start, 3)
        self.assertClosed(s)

    def test_idle_connection_is_closed(self):
        s = connect(self.proxy.port)
        s.sendall(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
        r = Reader(s)
        self.assertEqual(r.read_response()[0], 200)
        start = time.time()
        self.assertClosed(s)
        self.assertLess(time.time() - start, 3)

    def test_header_too_large_is_431(self):
        s, _, status, h, body = exchange(
            self.proxy.port, b"GET /api HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n")
        self.assertLocalReply(status, h, body, 431, "header-too-large")
        self.assertClosed(s)

    def test_body_too_large_by_content_length_is_413(self):
        s, _, status, h, body = exchange(
            self.proxy.port, b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000)
        self.assertLocalReply(status, h, body, 413, "body-too-large")
        self.assertClosed(s)

    def test_body_too_large_chunked_is_413(self):
        body = b"".join(b"100\r\n" + b"b" * 256 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
        s, _, status, h, reply = exchange(
            self.proxy.port, b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        self.assertLocalReply(status, h, reply, 413, "body-too-large")
        self.assertClosed(s)

    def test_max_connections(self):
        # Connections of earlier tests count until the proxy has seen them close.
        open_connections = lambda: self.proxy.metric("bulwark_downstream_connections", listener="inbound")
        wait_for(lambda: open_connections() == 0, what="no client connection open")
        held = [connect(self.proxy.port) for _ in range(5)]
        for s in held:  # make sure each was accepted and is served
            s.sendall(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
        for s in held:
            self.assertEqual(Reader(s).read_response()[0], 200)
        extra = connect(self.proxy.port)
        extra.sendall(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertClosed(extra)
        for s in held:
            s.close()
        wait_for(lambda: open_connections() == 0, what="the held connections closed")
        s, _, status, _, _ = exchange(self.proxy.port, b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(status, 200)
        s.close()
        self.assertGreaterEqual(self.proxy.metric("bulwark_accepts_refused_total", listener="inbound",
                                                  reason="max_connections"), 1)

    def test_smuggling_attempts_get_400_and_close(self):
        attempts = {
            "cl-and-te": b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "double-cl": b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            "te-not-chunked": b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
            "te-chunked-not-last": b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
            "bad-chunk-size": b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            "space-before-colon": b"GET /api HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc",
            "obs-fold": b"GET /api HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
            "bad-version": b"GET /api HTTP/2.0\r\nHost: x\r\n\r\n",
            "missing-host": b"GET /api HTTP/1.1\r\n\r\n",
            "two-hosts": b"GET /api HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            "connect": b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        }
        for name, raw in attempts.items():
            with self.subTest(name):
                s, _, status, h, body = exchange(self.proxy.port, raw)
                self.assertLocalReply(status, h, body, 400, "bad-request")
                self.assertEqual(h.get("connection"), "close")
                self.assertClosed(s)
        # None of them reached the backend as a request of its own.
        log = self.proxy.access_log()
        self.assertFalse([e for e in log if e["status"] == 200 and e["reason"] == "" and e["path"] == "/"])

    def test_header_value_split_across_packets_is_not_a_fold(self):
        s = connect(self.proxy.port)
        s.sendall(b"GET /api?headers=1 HTTP/1.1\r\nHost: x\r\nX-Long: abc")
        time.sleep(0.05)
        s.sendall(b"def\r\n")
        time.sleep(0.05)
        s.sendall(b"\r\n")
        status, _, body = Reader(s).read_response()
        self.assertEqual(status, 200)
        self.assertIn(["X-Long", "abcdef"], json.loads(body)["headers"])
        s.close()

    def test_local_replies_are_counted(self):
        exchange(self.proxy.port, b"GET /none HTTP/1.1\r\nHost: x\r\n\r\n")[0].close()
        # The worker counts the request once the reply is written: the client can read it
        # (and scrape) a moment before.
        wait_for(lambda: (self.proxy.metric("bulwark_local_replies_total", route="", reason="no-route") or 0) >= 1,
                 what="the no-route reply counted")
        wait_for(lambda: (self.proxy.metric("bulwark_requests_total", listener="inbound", code="404") or 0) >= 1,
                 what="the 404 counted")


if __name__ == "__main__":
    unittest.main()
