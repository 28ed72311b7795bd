"""Downstream HTTP/2 (RFC 9113) on listeners, written ahead of the feature to its contract.

`protocols: [http1, h2c, h2]` on a listener: h2c is cleartext HTTP/2 with prior knowledge (a
connection that starts with the preface; with http1 listed too, any other first bytes are
HTTP/1), h2 is offered by ALPN on a TLS listener (preferred over http/1.1 when http1 is listed).
`http2: { max_concurrent_streams, initial_window, max_frame_size }` tunes a listener. Each
stream is one request through the HTTP/1 path (routes, rate limits, local replies with
x-bulwark-reason, upstreams in HTTP/1.1, trailers back as a trailing HEADERS frame), counted in
bulwark_requests_total; bulwark_http2_streams{side="downstream",name} gauges open streams and
bulwark_http2_protocol_errors_total{side="downstream",name,reason} counts the protections:
rapid reset, CONTINUATION flood, HPACK bomb, too many streams, SETTINGS and PING floods and
zero-window stalls, each ending the connection with GOAWAY while other clients keep being
served and the process stays small. Flow control bounds what is buffered both ways; SIGTERM
sends GOAWAY and lets streams finish; a reload applies to new streams of open connections.

Happy paths use real clients (curl --http2-prior-knowledge / --http2, nghttp, h2load); attacks
and exact assertions use the raw-frame client below (frames packed by hand, HPACK from the
`hpack` module for ordinary requests and by hand, without Huffman or indexing, for attacks).

Debian packages needed (add to BULWARK_TEST_PACKAGES in scripts/deps.sh):
  nghttp2-client  (nghttp, h2load)
  python3-h2      (brings python3-hpack: the raw client decodes bulwark's header blocks with it)
  curl, openssl   (already listed)
A test whose tool is missing is skipped, saying which.
"""
import collections
import json
import os
import re
import shutil
import socket
import tempfile
import time
import unittest
import zlib

from harness import (connect, crc_hex, free_port, pattern, Reader, request, SANITIZED, Testd,
                     wait_for)
from h2_client import (DATA, END_HEADERS, END_STREAM, frame, FRAME_SIZE_ERROR, H2Conn, HAVE_CURL,
                       HAVE_H2LOAD, HAVE_NGHTTP, HAVE_OPENSSL, HEADERS, MIB, NEEDS_HPACK,
                       request_block, RSS_LIMIT_KIB, SETTINGS_INITIAL_WINDOW_SIZE,
                       SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_MAX_FRAME_SIZE, window_update)
from h2_backend import (curl, h2load_summary, open_streams, pattern_crc, PeakRss, PyBackend,
                        requests_total, run, settled_requests_total, start_bulwark)
from test_tls_upstream import check
from tls_backend import pki


# --- --check: the protocols key and the http2 block ----------------------------------------

class CheckProtocols(unittest.TestCase):
    """`bulwark --check`: valid protocol lists pass; h2c on TLS, h2 without TLS, unknown names
    and out-of-range http2 settings are errors at FILE:LINE:COL: key.path."""

    def config(self, protocols, tls=False, http2=None):
        lines = ["listeners:", "  - name: in", "    listen: 127.0.0.1:8443"]
        if tls:
            lines.append('    tls: { cert: "%s", key: "%s" }' % (pki().server_cert, pki().server_key))
        lines.append("    protocols: %s" % protocols)
        if http2:
            lines.append("    http2: %s" % http2)
        lines += ["    routes: [{ name: api, upstream: app }]", "upstreams:", "  - name: app",
                  "    endpoints: [127.0.0.1:8080]"]
        return "\n".join(lines) + "\n"

    @staticmethod
    def line_of(text, key):
        return [i + 1 for i, l in enumerate(text.splitlines()) if l.strip().startswith(key + ":")][0]

    def assert_ok(self, text):
        path, code, out, err = check(text)
        self.assertEqual((code, out, err), (0, "%s: ok\n" % path, ""), "--check refused:\n" + text)

    def assert_error_at(self, text, key, key_path):
        path, code, out, err = check(text)
        self.assertNotEqual(code, 0, "--check accepted:\n" + text)
        line = self.line_of(text, key)
        # FILE:LINE:COL: key.path: message -- on the line of the key, and not "unknown key".
        m = re.search(r"(?m)^%s:%d:\d+: %s: (?P<message>(?!unknown key)\S.*)$" % (re.escape(path), line, key_path), err)
        self.assertTrue(m, "expected FILE:%d:COL: %s: message, for:\n%s\ngot:\n%s" % (line, key_path, text, err))
        return m.group("message")

    def test_valid_plain_protocol_lists(self):
        for protocols in ("[http1, h2c]", "[h2c]", "[http1]", "[h2c, http1]"):
            with self.subTest(protocols=protocols):
                self.assert_ok(self.config(protocols))

    def test_http2_block_with_its_documented_defaults(self):
        self.assert_ok(self.config("[http1, h2c]", http2="{ max_concurrent_streams: 100, "
                                   "initial_window: 256KiB, max_frame_size: 16KiB }"))
        self.assert_ok(self.config("[h2c]", http2="{ max_concurrent_streams: 10 }"))

    @unittest.skipUnless(HAVE_OPENSSL, "needs the openssl command to make test certificates")
    def test_valid_tls_protocol_lists(self):
        for protocols in ("[http1, h2]", "[h2]"):
            with self.subTest(protocols=protocols):
                self.assert_ok(self.config(protocols, tls=True))

    @unittest.skipUnless(HAVE_OPENSSL, "needs the openssl command to make test certificates")
    def test_h2c_on_a_tls_listener_is_an_error(self):
        message = self.assert_error_at(self.config("[http1, h2c]", tls=True), "protocols",
                                       r"listeners\[0\]\.protocols(\[\d+\])?")
        self.assertRegex(message, r"h2c|tls|TLS", "the message should say what is wrong")

    def test_h2_without_tls_is_an_error(self):
        message = self.assert_error_at(self.config("[http1, h2]"), "protocols",
                                       r"listeners\[0\]\.protocols(\[\d+\])?")
        self.assertRegex(message, r"\bh2\b|tls|TLS", "the message should say what is wrong")

    def test_unknown_protocol_is_an_error(self):
        self.assert_error_at(self.config("[http1, spdy]"), "protocols",
                             r"listeners\[0\]\.protocols(\[\d+\])?")

    def test_http2_settings_out_of_range_are_errors(self):
        # RFC 9113 6.5.2: SETTINGS_MAX_FRAME_SIZE is 16384 to 16777215, SETTINGS_INITIAL_WINDOW_SIZE
        # at most 2^31-1; a listener advertising anything else would break every client.
        self.assert_error_at(self.config("[h2c]", http2="{ max_frame_size: 1KiB }"), "http2",
                             r"listeners\[0\]\.http2\.max_frame_size")
        self.assert_error_at(self.config("[h2c]", http2="{ initial_window: 4GiB }"), "http2",
                             r"listeners\[0\]\.http2\.initial_window")
        path, code, out, err = check(self.config("[h2c]", http2="{ max_streams: 10 }"))
        self.assertNotEqual(code, 0)
        self.assertIn("listeners[0].http2.max_streams: unknown key", err)


# --- cleartext HTTP/2 with prior knowledge -------------------------------------------------

PLAIN = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: plain
    listen: 127.0.0.1:{port}
    protocols: [http1, h2c]
    routes:
      - {{ name: app, match: {{ prefix: /app }}, upstream: app, timeout: 60s }}
      - {{ name: limited, match: {{ prefix: /limited }}, upstream: app,
          rate_limit: {{ rate: 1/m, burst: 1, key: route }} }}
      - {{ name: gone, match: {{ prefix: /gone }}, upstream: dead }}
      - {{ name: py, match: {{ prefix: /py }}, upstream: py, timeout: 60s }}
  - name: small
    listen: 127.0.0.1:{small_port}
    protocols: [h2c]
    limits: {{ max_header_bytes: 4KiB, max_headers: 20, max_body_bytes: 1MiB }}
    http2: {{ max_concurrent_streams: 10, initial_window: 64KiB, max_frame_size: 32KiB }}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app }}
upstreams:
  - name: app
    endpoints: [{upstream}]
  - name: dead
    endpoints: [127.0.0.1:{dead_port}]
  - name: py
    endpoints: [{py}]
"""


@NEEDS_HPACK
class H2c(unittest.TestCase):
    """One bulwark: listener `plain` ([http1, h2c], defaults) and `small` ([h2c], tight limits
    and its own http2 block), in front of bulwark-testd, a Python backend and a dead port."""

    @classmethod
    def setUpClass(cls):
        cls.backend = Testd()
        cls.py = PyBackend()
        try:
            cls.proxy = start_bulwark(PLAIN, upstream=cls.backend.address, py=cls.py.address,
                                      small_port=free_port(), dead_port=free_port())
        except BaseException:
            cls.backend.stop()
            cls.py.stop()
            raise
        cls.port = cls.proxy.port
        cls.small_port = cls.proxy.values["small_port"]

    @classmethod
    def tearDownClass(cls):
        code = cls.proxy.stop()
        cls.backend.stop()
        cls.py.stop()
        if code not in (0, None):
            raise AssertionError("bulwark exited with %s:\n%s" % (code, cls.proxy.stderr_text()[-3000:]))

    def h2(self, port=None, **kw):
        c = H2Conn(port or self.port, **kw)
        self.addCleanup(c.close)
        return c

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def test_settings_advertise_the_listener_http2_block(self):
        c = self.h2()
        self.assertEqual(c.server_settings.get(SETTINGS_MAX_CONCURRENT_STREAMS), 100, c.server_settings)
        self.assertEqual(c.server_settings.get(SETTINGS_INITIAL_WINDOW_SIZE, 65535), 256 * 1024)
        self.assertEqual(c.server_settings.get(SETTINGS_MAX_FRAME_SIZE, 16384), 16384)
        c = self.h2(self.small_port)
        self.assertEqual(c.server_settings.get(SETTINGS_MAX_CONCURRENT_STREAMS), 10, c.server_settings)
        self.assertEqual(c.server_settings.get(SETTINGS_INITIAL_WINDOW_SIZE, 65535), 64 * 1024)
        self.assertEqual(c.server_settings.get(SETTINGS_MAX_FRAME_SIZE, 16384), 32 * 1024)

    @unittest.skipUnless(HAVE_CURL, "curl is not installed")
    def test_curl_prior_knowledge(self):
        code, version, body, p = curl("--http2-prior-knowledge", self.url("/app/curl?headers=1"))
        self.assertEqual((code, version), ("200", "2"), p.stderr)
        seen = json.loads(body)
        self.assertEqual((seen["method"], seen["url"], seen["version"]), ("GET", "/app/curl?headers=1", "1.1"))
        headers = {k.lower(): v for k, v in seen["headers"]}
        self.assertEqual(headers.get("host"), "127.0.0.1:%d" % self.port)  # from :authority
        self.assertFalse([k for k in headers if k.startswith(":")], headers)

    @unittest.skipUnless(HAVE_CURL, "curl is not installed")
    def test_http1_still_served_on_the_same_listener(self):
        status, headers, body = request(self.port, "GET", "/app/h1?size=100")
        self.assertEqual((status, len(body)), (200, 100))
        code, version, body, p = curl("--http1.1", self.url("/app/h1"))
        self.assertEqual((code, version), ("200", "1.1"), p.stderr)

    def test_first_bytes_split_across_segments(self):
        # "P" could start the preface: bulwark must wait for more before choosing HTTP/1.
        s = connect(self.port)
        s.sendall(b"P")
        time.sleep(0.2)
        s.sendall(b"OST /app/split HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
        status, headers, body = Reader(s).read_response()
        s.close()
        self.assertEqual(status, 200, "HTTP/1 whose first byte came alone: %r %r" % (headers, body[:200]))
        self.assertEqual(headers.get("x-testd-body-bytes"), "2")
        # The preface in three pieces is still HTTP/2.
        c = self.h2(preface_chunks=[3, 10])
        s = c.get("/app/split-preface")
        self.assertEqual(s.status, 200, c.describe())

    def test_h2c_only_listener_does_not_serve_http1(self):
        seen = self.backend.stats()["requests"]
        s = connect(self.small_port, timeout=5)
        s.sendall(b"GET /http1 HTTP/1.1\r\nHost: x\r\n\r\n")
        data, closed = b"", False
        deadline = time.time() + 5
        try:
            while time.time() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
        s.close()
        self.assertFalse(data.startswith(b"HTTP/1.1 2"), data[:200])
        self.assertTrue(closed, "an HTTP/1 request on an h2c-only listener left the connection open: %r" % data[:200])
        self.assertEqual(self.backend.stats()["requests"], seen + 1)  # only the /__stats calls

    def test_request_mapping_and_response_head(self):
        c = self.h2()
        sid = c.request("POST", "/app/map?headers=1", authority="svc.example:8443",
                        headers=[("x-custom", "v1"), ("cookie", "a=1"), ("cookie", "b=2"),
                                 ("content-type", "text/plain")],
                        body=b"hello h2")
        s = c.wait(sid)
        self.assertEqual(s.status, 200, c.describe())
        seen = json.loads(s.body)
        self.assertEqual((seen["method"], seen["url"], seen["version"]), ("POST", "/app/map?headers=1", "1.1"))
        headers = collections.defaultdict(list)
        for k, v in seen["headers"]:
            headers[k.lower()].append(v)
        self.assertEqual(headers["host"], ["svc.example:8443"])  # :authority -> Host
        self.assertEqual(headers["x-custom"], ["v1"])
        # RFC 9113 8.2.3: split cookie fields are joined with "; " for HTTP/1.1.
        self.assertEqual(headers["cookie"], ["a=1; b=2"])
        self.assertFalse([k for k in headers if k.startswith(":")], dict(headers))
        self.assertEqual(s.header("x-testd-body-bytes"), "8")  # the body went up, END_STREAM ended it
        self.assertEqual(s.header("x-testd-body-crc32"), crc_hex(b"hello h2"))
        # RFC 9113 8.2: lower-case names, no connection-specific fields in the response head.
        names = [k for k, _ in s.headers]
        self.assertEqual(names, [k.lower() for k in names])
        for banned in ("connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"):
            self.assertNotIn(banned, names)
        self.assertEqual(s.header("x-testd-name"), "testd")
        # A chunked upstream response arrives whole, without transfer-encoding.
        s = c.get("/app/chunked?chunked=1&size=100000")
        self.assertEqual((s.status, len(s.body)), (200, 100000), c.describe())
        self.assertEqual(crc_hex(s.body), crc_hex(pattern(100000)))
        self.assertNotIn("transfer-encoding", [k for k, _ in s.headers])
        # HEAD: the head only, END_STREAM on it.
        s = c.wait(c.request("HEAD", "/app/head?size=1000"))
        self.assertEqual((s.status, s.header("content-length"), s.received, s.ended), (200, "1000", 0, True))
        self.assertEqual(c.goaways, [])

    def test_fields_named_by_the_upstreams_connection_header_are_dropped(self):
        # RFC 9110 7.6.1: what Connection names is hop-by-hop, in any case, on any of its lines.
        c = self.h2()
        s = c.get("/py/conn-listed")
        self.assertEqual((s.status, s.body), (200, b"ok"), c.describe())
        names = [k for k, _ in s.headers]
        for banned in ("x-hop", "connection", "keep-alive"):
            self.assertNotIn(banned, names, s.headers)
        self.assertEqual(s.header("x-end"), "2")

    def test_upstream_trailers_come_back_as_trailing_headers(self):
        c = self.h2()
        s = c.get("/py/trailers", headers=[("te", "trailers")])
        self.assertEqual(s.status, 200, c.describe())
        self.assertEqual(s.body, b"hello, trailers")
        self.assertTrue(s.ended)
        self.assertIsNotNone(s.trailers, "no trailing HEADERS frame: " + s.describe())
        trailers = dict(s.trailers)
        self.assertEqual((trailers.get("x-checksum"), trailers.get("x-status")), ("1234", "done"))
        self.assertFalse([k for k in trailers if k.startswith(":")], trailers)
        self.assertNotIn("transfer-encoding", [k for k, _ in s.headers])

    def test_streams_are_multiplexed_gauged_and_counted(self):
        before = settled_requests_total(self.proxy, "plain")
        c = self.h2()
        slow = [c.request("GET", "/app/slow%d?delay=1000&size=1000" % i) for i in range(2)]
        fast = c.request("GET", "/app/fast?size=10")
        s = c.wait(fast, timeout=5)
        self.assertEqual(s.status, 200, c.describe())
        self.assertFalse([sid for sid in slow if c.streams[sid].done],
                         "the fast stream waited for the slow ones: " + c.describe())
        wait_for(lambda: open_streams(self.proxy, "plain") == 2, timeout=2,
                 what="bulwark_http2_streams{side=downstream,name=plain} == 2 while two are in flight")
        # /status shows the listener's HTTP/2 connections and their streams.
        _, _, body = request(self.proxy.admin_port, "GET", "/status")
        listeners = {l["name"]: l for l in json.loads(body)["listeners"]}
        self.assertEqual(listeners["plain"]["http2"]["streams"], 2, listeners)
        self.assertGreaterEqual(listeners["plain"]["http2"]["connections"], 1, listeners)
        self.assertGreater(listeners["plain"]["http2"]["streams_per_connection"], 0, listeners)
        for sid in slow:
            s = c.wait(sid)
            self.assertEqual((s.status, len(s.body)), (200, 1000), c.describe())
        wait_for(lambda: open_streams(self.proxy, "plain") == 0, timeout=2, what="the streams gauge back to 0")
        wait_for(lambda: requests_total(self.proxy, "plain") == before + 3, timeout=2,
                 what="bulwark_requests_total{listener=plain} +3 (one per stream)")

    def test_unknown_method_is_refused_on_its_stream(self):
        # Found by fuzz_h2: a method llhttp does not name (or a lower-case one) must be a 400 on
        # its stream, not a crash; the connection goes on serving.
        c = self.h2()
        for method in ("FROB", "get", "PRI"):
            s = c.wait(c.request(method, "/app/x"), timeout=5)
            self.assertEqual((s.status, s.header("x-bulwark-reason")), (400, "bad-request"), c.describe())
        s = c.wait(c.request("GET", "/app/x?size=10"), timeout=5)
        self.assertEqual((s.status, len(s.body)), (200, 10), c.describe())

    def test_request_trailers_cannot_set_what_bulwark_sets(self):
        # Found by fuzz_h2: trailers of an HTTP/2 request follow the HTTP/1 rule: no Host,
        # X-Forwarded-*, X-Request-Id or framing fields among the forwarded trailers.
        c = self.h2()
        sid = c.request("POST", "/py/echo", body=b"abc", end_stream=False)
        # (nghttp2 itself resets a stream whose trailers carry host or content-length.)
        c.send_block(sid, c.encoder.encode([("x-ok", "1"), ("x-forwarded-for", "6.6.6.6"),
                                            ("x-request-id", "forged"), ("x-forwarded-proto", "gopher")]), True)
        s = c.wait(sid, timeout=5)
        self.assertEqual(s.status, 200, c.describe())
        raw = self.py.last_raw
        tail = raw[raw.index(b"0\r\n", raw.index(b"\r\n\r\n")):]
        self.assertIn(b"x-ok: 1", tail)
        for forged in (b"6.6.6.6", b"forged", b"gopher"):
            self.assertNotIn(forged, tail, raw)

    def test_grpc_local_replies_and_grpc_timeout(self):
        # A gRPC client (content-type application/grpc) gets Bulwark's own answers as gRPC
        # errors: HTTP 200, trailers-only, grpc-status; its grpc-timeout bounds the route's 15 s.
        c = self.h2()
        grpc = [("content-type", "application/grpc"), ("te", "trailers")]
        start = time.time()
        slow = c.request("POST", "/app/slow?delay=3000", headers=grpc + [("grpc-timeout", "300m")],
                         body=b"\x00\x00\x00\x00\x00")
        nowhere = c.request("POST", "/nowhere", headers=grpc, body=b"\x00\x00\x00\x00\x00")
        gone = c.request("POST", "/gone", headers=grpc, body=b"\x00\x00\x00\x00\x00")
        for sid in (nowhere, gone, slow):
            c.wait(sid, timeout=5)
        self.assertLess(time.time() - start, 2.5, "grpc-timeout 300m did not bound the request")
        for sid, code, reason in ((slow, "4", "upstream-timeout"), (nowhere, "12", "no-route"),
                                  (gone, "14", "upstream-connect-failure")):
            s = c.streams[sid]
            self.assertEqual((s.status, s.header("grpc-status"), s.header("x-bulwark-reason"),
                              s.header("content-type"), s.body),
                             (200, code, reason, "application/grpc", b""), c.describe())

    def test_local_replies_stay_on_their_streams(self):
        c = self.h2()
        ok = c.request("GET", "/app/ok?delay=300&size=5000")
        nowhere = c.request("GET", "/nowhere")
        limited = [c.request("GET", "/limited/%d" % i) for i in range(2)]
        gone = c.request("GET", "/gone")
        for sid in [nowhere, gone] + limited + [ok]:
            c.wait(sid)
        s = c.streams[nowhere]
        self.assertEqual((s.status, s.header("x-bulwark-reason")), (404, "no-route"), c.describe())
        self.assertEqual(json.loads(s.body)["status"], 404)
        s = c.streams[gone]
        self.assertEqual((s.status, s.header("x-bulwark-reason")), (502, "upstream-connect-failure"), c.describe())
        got = sorted((c.streams[sid].status, c.streams[sid].header("x-bulwark-reason")) for sid in limited)
        self.assertEqual(got, [(200, None), (429, "rate-limited")], c.describe())
        refused = [c.streams[sid] for sid in limited if c.streams[sid].status == 429][0]
        self.assertIsNotNone(refused.header("retry-after"))
        s = c.streams[ok]
        self.assertEqual((s.status, len(s.body)), (200, 5000), c.describe())
        self.assertEqual(crc_hex(s.body), crc_hex(pattern(5000)))
        # The connection goes on.
        s = c.get("/app/after")
        self.assertEqual(s.status, 200, c.describe())
        self.assertEqual(c.goaways, [])
        self.assertFalse(c.closed)

    @unittest.skipUnless(HAVE_H2LOAD, "h2load (nghttp2-client) is not installed")
    def test_h2load_2000_requests_on_4_connections(self):
        before = settled_requests_total(self.proxy, "plain")
        p = run(["h2load", "-n", "2000", "-c", "4", "-m", "16", self.url("/app/load")], timeout=60)
        summary = h2load_summary(p.stdout)
        self.assertIsNotNone(summary, p.stdout[-2000:] + p.stderr[-2000:])
        self.assertEqual(summary, (2000, 0, 0, 2000), p.stdout[-1500:])
        wait_for(lambda: requests_total(self.proxy, "plain") == before + 2000, timeout=3,
                 what="bulwark_requests_total{listener=plain} +2000")
        wait_for(lambda: open_streams(self.proxy, "plain") == 0, timeout=2, what="the streams gauge back to 0")

    @unittest.skipUnless(HAVE_NGHTTP, "nghttp (nghttp2-client) is not installed")
    def test_nghttp_fetches_concurrently_on_one_connection(self):
        p = run(["nghttp", "-ns", self.url("/app/slow?delay=700&size=200"), self.url("/app/quick?size=100"),
                 self.url("/missing")], timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # The statistics table is sorted by completion: "id responseEnd requestStart process code size path".
        rows = re.findall(r"(?m)^\s*\d+\s+\S+\s+\S+\s+\S+\s+(\d{3})\s+\S+\s+(\S+)\s*$", p.stdout)
        self.assertEqual(dict((path, code) for code, path in rows),
                         {"/missing": "404", "/app/quick?size=100": "200", "/app/slow?delay=700&size=200": "200"},
                         p.stdout)
        self.assertEqual(rows[-1][1], "/app/slow?delay=700&size=200", "the slow stream held the others back:\n" + p.stdout)

    @unittest.skipUnless(HAVE_CURL, "curl is not installed")
    def test_upload_8mib_with_curl_through_echo(self):
        data = os.urandom(8 * MIB)
        d = tempfile.mkdtemp(prefix="bulwark-h2-")
        self.addCleanup(shutil.rmtree, d, True)
        src, dst = os.path.join(d, "up"), os.path.join(d, "down")
        with open(src, "wb") as f:
            f.write(data)
        code, version, _, p = curl("--http2-prior-knowledge", "--data-binary", "@" + src, "-o", dst,
                                   "-H", "content-type: application/octet-stream", self.url("/app/echo?echo=1"))
        self.assertEqual((code, version), ("200", "2"), p.stderr)
        with open(dst, "rb") as f:
            back = f.read()
        self.assertEqual((len(back), crc_hex(back)), (len(data), crc_hex(data)))

    def test_upload_8mib_raw_without_content_length(self):
        # Bulwark must keep opening its receive windows (its initial window is 256 KiB).
        data = os.urandom(8 * MIB)
        c = self.h2()
        s = c.wait(c.request("POST", "/app/up", body=data), timeout=30)
        self.assertEqual(s.status, 200, c.describe())
        self.assertEqual((s.header("x-testd-body-bytes"), s.header("x-testd-body-crc32")),
                         (str(len(data)), crc_hex(data)))

    @unittest.skipUnless(HAVE_CURL, "curl is not installed")
    def test_download_32mib_with_curl(self):
        size = 32 * MIB
        d = tempfile.mkdtemp(prefix="bulwark-h2-")
        self.addCleanup(shutil.rmtree, d, True)
        dst = os.path.join(d, "down")
        code, version, _, p = curl("--http2-prior-knowledge", "-o", dst, self.url("/app/down?size=%d" % size))
        self.assertEqual((code, version), ("200", "2"), p.stderr)
        with open(dst, "rb") as f:
            got = f.read()
        self.assertEqual((len(got), crc_hex(got)), (size, crc_hex(pattern(size))))

    def test_client_that_does_not_read_is_not_buffered_for(self):
        # A 96 MiB response to a client that never opens its 64 KiB windows: bulwark may hold
        # a bounded amount, reads the upstream no faster than the client takes it, and the
        # whole body still arrives intact once the client opens the windows.
        size = 96 * MIB
        c = self.h2()
        c.auto_window = False
        with PeakRss(self.proxy.proc.pid) as rss:
            sid = c.request("GET", "/py/big?size=%d" % size)
            c.pump(lambda: c.streams[sid].received >= 65535 or c.streams[sid].done, timeout=5)
            s = c.streams[sid]
            self.assertEqual((s.status, s.received), (200, 65535), c.describe())
            time.sleep(1.5)
            first = self.py.sent[size]
            time.sleep(0.5)
            second = self.py.sent[size]
        self.assertLess(second, 32 * MIB, "bulwark read %.1f MiB of the upstream response for a client "
                        "that took 64 KiB" % (second / MIB))
        self.assertLess(second - first, MIB, "bulwark kept reading the upstream for a stalled client")
        if not SANITIZED:
            self.assertLess(rss.growth, RSS_LIMIT_KIB, "RSS grew by %d KiB" % rss.growth)
        crc = [zlib.crc32(s.body)]
        s.data = bytearray()
        s.sink = lambda b: crc.__setitem__(0, zlib.crc32(b, crc[0]))
        c.auto_window = True
        c.send(window_update(0, (1 << 31) - 1 - 65535) + window_update(sid, (1 << 31) - 1 - 65535))
        c.pump(lambda: s.done, timeout=60)
        self.assertEqual((s.received, s.ended), (size, True), c.describe())
        self.assertEqual(crc[0], pattern_crc(size), "the body arrived corrupted")

    def test_header_limits_of_the_listener(self):
        seen = self.backend.stats()["requests"]
        for what, headers in [("30 fields (max_headers 20)", [("x-h%d" % i, "v") for i in range(30)]),
                              ("a 6 KiB field (max_header_bytes 4 KiB)", [("x-big", "a" * 6144)])]:
            c = self.h2(self.small_port)
            sid = c.request("GET", "/limits", headers=headers)
            c.pump(lambda: c.streams[sid].done or c.closed, timeout=5)
            s = c.streams[sid]
            refused = s.status == 431 or s.reset is not None or bool(c.goaways)
            self.assertTrue(refused, "%s: not refused (431, RST_STREAM or GOAWAY): %s" % (what, c.describe()))
        self.assertEqual(self.backend.stats()["requests"], seen + 1, "an over-limit request was forwarded")
        c = self.h2(self.small_port)
        s = c.get("/limits-ok", headers=[("x-h%d" % i, "v") for i in range(10)])
        self.assertEqual(s.status, 200, c.describe())

    def test_body_limit_413(self):
        c = self.h2(self.small_port)
        # Declared too large: refused before any DATA.
        sid = c.request("POST", "/body", headers=[("content-length", str(2 * MIB))], end_stream=False)
        s = c.wait(sid, timeout=5)
        self.assertEqual((s.status, s.header("x-bulwark-reason")), (413, "body-too-large"), c.describe())
        # Undeclared: refused once past 1 MiB.
        c = self.h2(self.small_port)
        sid = c.request("POST", "/body", end_stream=False)
        c.send_data(sid, os.urandom(2 * MIB), stop_on_response=True, timeout=5)
        s = c.wait(sid, timeout=5)
        self.assertEqual((s.status, s.header("x-bulwark-reason")), (413, "body-too-large"), c.describe())

    def test_frame_size_limits(self):
        # max_frame_size 32 KiB on `small`: a 20000-byte DATA frame is fine there...
        c = self.h2(self.small_port)
        sid = c.request("POST", "/frame?echo=1", headers=[("content-length", "20000")], end_stream=False)
        c.send(frame(DATA, END_STREAM, sid, b"x" * 20000))
        s = c.wait(sid)
        self.assertEqual((s.status, s.body), (200, b"x" * 20000), c.describe())
        # ...while on `plain` (16 KiB) a 20000-byte HEADERS frame is a connection error.
        c = self.h2()
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, c.new_stream(),
                     request_block(b"/app/frame", extra=[(b"x-pad", b"a" * 19900)])))
        c.wait_closed()
        self.assertIn(FRAME_SIZE_ERROR, c.goaway_codes(), c.describe())
        self.assertTrue(c.closed, c.describe())
