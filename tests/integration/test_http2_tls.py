"""HTTP/2 by ALPN on TLS listeners, and HTTP/2 connections across drain and reload (see
test_http2.py for the contract)."""
import http.client
import json
import os
import signal
import socket
import ssl
import time
import unittest

from harness import (free_port, Testd, wait_for)
from h2_client import (H2Conn, HAVE_CURL, HAVE_H2LOAD, HAVE_OPENSSL, MIB, NEEDS_HPACK, NO_ERROR)
from h2_backend import (curl, h2load_summary, run, start_bulwark)
from tls_backend import pki


# --- TLS: h2 by ALPN -----------------------------------------------------------------------

TLS = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: secure
    listen: 127.0.0.1:{port}
    protocols: [http1, h2]
    tls: {{ cert: "{cert}", key: "{key}" }}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app }}
  - name: h2only
    listen: 127.0.0.1:{h2_port}
    protocols: [h2]
    tls: {{ cert: "{cert}", key: "{key}" }}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app }}
upstreams:
  - name: app
    endpoints: [{upstream}]
"""


def tls_context(alpn):
    ctx = ssl.create_default_context(cafile=pki().ca)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


@unittest.skipUnless(HAVE_OPENSSL, "needs the openssl command to make test certificates")
class H2Tls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.backend = Testd()
        try:
            cls.proxy = start_bulwark(TLS, upstream=cls.backend.address, cert=pki().server_cert,
                                      key=pki().server_key, h2_port=free_port())
        except BaseException:
            cls.backend.stop()
            raise
        cls.port = cls.proxy.port
        cls.h2_port = cls.proxy.values["h2_port"]

    @classmethod
    def tearDownClass(cls):
        code = cls.proxy.stop()
        cls.backend.stop()
        if code not in (0, None):
            raise AssertionError("bulwark exited with %s:\n%s" % (code, cls.proxy.stderr_text()[-3000:]))

    def url(self, path, port=None):
        return "https://localhost:%d%s" % (port or self.port, path)

    @unittest.skipUnless(HAVE_CURL, "curl is not installed")
    def test_curl_gets_h2_by_alpn_and_http11_when_asked(self):
        code, version, body, p = curl("--http2", "--cacert", pki().ca, self.url("/tls?headers=1"))
        self.assertEqual((code, version), ("200", "2"), p.stderr)
        headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
        self.assertEqual(headers.get("x-forwarded-proto"), "https")
        self.assertEqual(headers.get("host"), "localhost:%d" % self.port)
        code, version, body, p = curl("--http1.1", "--cacert", pki().ca, self.url("/tls"))
        self.assertEqual((code, version), ("200", "1.1"), p.stderr)

    def test_h2_preferred_and_http11_without_alpn(self):
        # The client lists http/1.1 first: the server's preference, h2, wins.
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock = tls_context(["http/1.1", "h2"]).wrap_socket(raw, server_hostname="localhost")
        self.assertEqual(sock.selected_alpn_protocol(), "h2")
        sock.close()
        # No ALPN at all: HTTP/1.1 on a listener with http1.
        c = http.client.HTTPSConnection("localhost", self.port, timeout=10, context=tls_context(None))
        c.request("GET", "/no-alpn")
        r = c.getresponse()
        r.read()
        self.assertEqual(r.status, 200)
        c.close()

    @NEEDS_HPACK
    def test_raw_h2_over_tls(self):
        c = H2Conn(self.port, ssl_context=tls_context(["h2"]))
        self.addCleanup(c.close)
        self.assertEqual(c.sock.selected_alpn_protocol(), "h2")
        s = c.get("/raw?headers=1", scheme="https", authority="localhost:%d" % self.port)
        self.assertEqual(s.status, 200, c.describe())
        headers = {k.lower(): v for k, v in json.loads(s.body)["headers"]}
        self.assertEqual(headers.get("x-forwarded-proto"), "https")
        s = c.wait(c.request("POST", "/raw-up", scheme="https", body=os.urandom(MIB)), timeout=20)
        self.assertEqual((s.status, s.header("x-testd-body-bytes")), (200, str(MIB)), c.describe())

    def test_h2_only_listener_refuses_http11(self):
        raw = socket.create_connection(("127.0.0.1", self.h2_port), timeout=5)
        try:
            sock = tls_context(["http/1.1"]).wrap_socket(raw, server_hostname="localhost")
        except (ssl.SSLError, ConnectionError):
            return  # refused in the handshake (no_application_protocol): fine
        self.addCleanup(sock.close)
        self.assertNotEqual(sock.selected_alpn_protocol(), "http/1.1")
        data = b""
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (OSError, ssl.SSLError):
            pass
        self.assertFalse(data.startswith(b"HTTP/1.1 2"), data[:200])

    @unittest.skipUnless(HAVE_CURL, "curl is not installed")
    def test_h2_only_listener_serves_h2(self):
        code, version, _, p = curl("--http2", "--cacert", pki().ca, self.url("/only", self.h2_port))
        self.assertEqual((code, version), ("200", "2"), p.stderr)

    @unittest.skipUnless(HAVE_H2LOAD, "h2load (nghttp2-client) is not installed")
    def test_h2load_over_tls(self):
        p = run(["h2load", "-n", "400", "-c", "2", "-m", "8", "https://127.0.0.1:%d/load" % self.port], timeout=60)
        self.assertIn("Application protocol: h2", p.stdout, p.stdout[-1500:] + p.stderr[-1500:])
        self.assertEqual(h2load_summary(p.stdout), (400, 0, 0, 400), p.stdout[-1500:])


# --- drain and reload ----------------------------------------------------------------------

LIFECYCLE = """
admin: {{ listen: 127.0.0.1:{admin} }}
drain: {{ timeout: 5s }}
access_log: {{ path: "off" }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    protocols: [h2c]
    routes:
{routes}
upstreams:
  - name: a
    endpoints: [{a}]
  - name: b
    endpoints: [{b}]
"""
ROUTES_A = "      - { name: v1, match: { prefix: /v1 }, upstream: a }\n"
ROUTES_B = ROUTES_A + "      - { name: v2, match: { prefix: /v2 }, upstream: b }\n"


@NEEDS_HPACK
class Lifecycle(unittest.TestCase):
    def setUp(self):
        self.a = Testd(name="a")
        self.b = Testd(name="b")
        self.addCleanup(self.b.stop)
        self.addCleanup(self.a.stop)
        self.proxy = start_bulwark(LIFECYCLE, a=self.a.address, b=self.b.address, routes=ROUTES_A)
        self.addCleanup(self.proxy.stop)

    def test_sigterm_sends_goaway_and_lets_streams_finish(self):
        c = H2Conn(self.proxy.port)
        self.addCleanup(c.close)
        self.assertEqual(c.get("/v1/warm").status, 200, c.describe())
        slow = c.request("GET", "/v1/slow?delay=1500&size=1000")
        wait_for(lambda: self.proxy.metric("bulwark_inflight_requests", upstream="a") == 1,
                 what="the slow stream in flight")
        self.proxy.signal(signal.SIGTERM)
        signalled = time.time()
        c.pump(lambda: bool(c.goaways), timeout=3)
        self.assertTrue(c.goaways, "no GOAWAY after SIGTERM: " + c.describe())
        self.assertLess(time.time() - signalled, 1.0, "GOAWAY waited for the in-flight stream")
        self.assertFalse(c.streams[slow].done, "the slow stream ended before the GOAWAY: " + c.describe())
        self.assertEqual(c.goaways[-1].code, NO_ERROR, c.describe())
        s = c.wait(slow, timeout=10)
        self.assertEqual((s.status, len(s.body)), (200, 1000), c.describe())
        self.assertGreaterEqual(c.goaways[-1].last_stream, slow, "the final GOAWAY disowns the in-flight stream")
        self.assertTrue(c.wait_closed(timeout=5), "the connection stayed open after the drain: " + c.describe())
        self.assertEqual(self.proxy.wait(10), 0, self.proxy.stderr_text()[-2000:])

    def test_reload_applies_to_new_streams_of_an_open_connection(self):
        c = H2Conn(self.proxy.port)
        self.addCleanup(c.close)
        s = c.get("/v2/before")
        self.assertEqual((s.status, s.header("x-bulwark-reason")), (404, "no-route"), c.describe())
        reloads = self.proxy.metric("bulwark_config_reloads_total", result="success") or 0
        tmp = self.proxy.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.proxy.render(LIFECYCLE, routes=ROUTES_B))
        os.rename(tmp, self.proxy.config_path)
        self.proxy.signal(signal.SIGHUP)
        wait_for(lambda: (self.proxy.metric("bulwark_config_reloads_total", result="success") or 0) > reloads,
                 timeout=5, what="the reload")
        s = c.get("/v2/after")
        self.assertEqual((s.status, s.header("x-testd-name")), (200, "b"), c.describe())
        s = c.get("/v1/after")
        self.assertEqual((s.status, s.header("x-testd-name")), (200, "a"), c.describe())
        self.assertEqual(c.goaways, [], "the reload sent GOAWAY")
        self.assertFalse(c.closed, c.describe())


if __name__ == "__main__":
    unittest.main()
