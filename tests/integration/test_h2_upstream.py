"""Upstream HTTP/2 (`protocol: h2` on an upstream): Bulwark speaks h2c (or h2 over TLS, by
ALPN) to the backend, many requests multiplexed on one connection.

Checked against a python3-h2 backend (h2_upstream_backend.H2Backend): HTTP/1.1 and HTTP/2
clients translated to HTTP/2 requests (Host as :authority, bodies with and without a length,
response trailers back in a chunked body), streams packed onto connections up to the
backend's SETTINGS_MAX_CONCURRENT_STREAMS and the pool's max_connections, REFUSED_STREAM and
GOAWAY (requests the backend did not process go again), PING keepalive closing a silent
connection, idle connections closed after pool.idle_timeout, TLS with ALPN h2, --check.
"""
import concurrent.futures
import http.client
import json
import os
import socket
import ssl
import threading
import time
import unittest
import zlib

try:
    import hpack
except ImportError:  # NEEDS_HPACK skips the tests that use it
    hpack = None

from harness import Bulwark, connect, crc_hex, free_port, pattern, Reader, request, wait_for
from h2_backend import curl
from h2_client import (DATA, END_HEADERS, END_STREAM, frame, HAVE_CURL, HAVE_OPENSSL, HEADERS,
                       NEEDS_HPACK, rst_stream, settings_frame)
from h2_upstream_backend import H2Backend
from test_tls_upstream import check
from tls_backend import pki

CONFIG = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
listeners:
  - name: in
    listen: 127.0.0.1:{port}
    protocols: [http1, h2c]
    routes:
      - name: all
        match: {{ prefix: / }}
        upstream: app
upstreams:
  - name: app
    endpoints: [{upstream}]
    protocol: h2
{extra}
"""


def get(port, path, method="GET", body=b"", headers=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


class H2UpstreamTest(unittest.TestCase):
    def start(self, extra="", **backend_args):
        self.backend = H2Backend(**backend_args)
        self.proxy = Bulwark(CONFIG, upstream=self.backend.address, extra=extra)
        return self.proxy

    def tearDown(self):
        for name in ("proxy", "backend"):
            obj = getattr(self, name, None)
            if obj:
                obj.stop()

    def metric(self, metric_name, **labels):
        """Like Bulwark.metric, with `name` usable as a label (0 when absent)."""
        total = 0.0
        for line in self.proxy.metrics().splitlines():
            if not line.startswith(metric_name + "{"):
                continue
            head, value = line.rsplit(" ", 1)
            have = dict(part.split("=", 1) for part in head[len(metric_name) + 1:-1].split(","))
            if all(have.get(k) == '"%s"' % v for k, v in labels.items()):
                total += float(value)
        return total

    # --- translation ------------------------------------------------------------------------

    def test_http1_client_to_h2_upstream(self):
        p = self.start()
        status, headers, body = get(p.port, "/echo?x=1", "POST", b"hello h2",
                                    {"Host": "svc.example:8080", "X-Custom": "kept",
                                     "Connection": "keep-alive, x-hop", "X-Hop": "dropped"})
        self.assertEqual((status, body), (200, b"hello h2"))
        self.assertEqual(headers["x-method"], "POST")
        self.assertEqual(headers["x-path"], "/echo?x=1")
        self.assertEqual(headers["x-authority"], "svc.example:8080")
        self.assertEqual(headers["content-length"], "8")
        req = self.backend.requests[-1]
        self.assertEqual(req["headers"].get("x-custom"), "kept")
        self.assertNotIn("x-hop", req["headers"])
        self.assertNotIn("connection", req["headers"])
        self.assertNotIn("host", req["headers"])
        self.assertEqual(req["headers"].get("x-forwarded-proto"), "http")
        self.assertTrue(req["headers"].get("x-request-id"))
        self.assertEqual(req["headers"].get("content-length"), "8")

    def test_bodies_both_ways_with_and_without_length(self):
        p = self.start()
        data = pattern(5 * 1024 * 1024 + 7)
        status, headers, body = get(p.port, "/echo", "POST", data)
        self.assertEqual((status, len(body), crc_hex(body)), (200, len(data), crc_hex(data)))
        # A chunked request body goes up as DATA frames without content-length; the response
        # without content-length comes back chunked.
        s = connect(p.port)
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 65536]), data[i:i + 65536])
                          for i in range(0, len(data), 65536))
        s.sendall(b"POST /echo?nolength HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + chunks + b"0\r\n\r\n")
        status, head, body = Reader(s).read_response()
        s.close()
        self.assertEqual(status, 200)
        self.assertEqual(head.get("transfer-encoding"), "chunked")
        self.assertEqual(crc_hex(body), crc_hex(data))
        self.assertNotIn("content-length", self.backend.requests[-1]["headers"])
        self.assertEqual(self.backend.requests[-1]["body_length"], len(data))

    def test_concurrent_uploads_share_a_connection(self):
        p = self.start()
        data = [pattern(3 * 1024 * 1024 + i) for i in range(6)]
        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            results = list(ex.map(lambda d: get(p.port, "/echo", "POST", d), data))
        for d, (status, _, body) in zip(data, results):
            self.assertEqual((status, len(body), crc_hex(body)), (200, len(d), crc_hex(d)))
        self.assertEqual(self.backend.connections, 1)

    def test_response_trailers_reach_http1_client(self):
        p = self.start()
        s = connect(p.port)
        s.sendall(b"GET /echo?trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
        r = Reader(s)
        head = r.read_until(b"\r\n\r\n")
        self.assertIn(b"transfer-encoding: chunked", head.lower())
        rest = r.read_until(b"\r\n\r\n")
        s.close()
        self.assertIn(b"x-trailer: done", rest.lower())

    @unittest.skipUnless(HAVE_CURL, "needs curl")
    def test_h2_client_to_h2_upstream(self):
        p = self.start()
        data = pattern(3 * 1024 * 1024)
        path = os.path.join(p.dir, "up.bin")
        with open(path, "wb") as f:
            f.write(data)
        got = os.path.join(p.dir, "down.bin")
        code, version, _, _ = curl("--http2-prior-knowledge", "--data-binary", "@" + path,
                                   "-o", got, "http://127.0.0.1:%d/echo" % p.port)
        self.assertEqual((code, version), ("200", "2"))
        with open(got, "rb") as f:
            self.assertEqual(crc_hex(f.read()), crc_hex(data))

    # --- multiplexing and the pool ----------------------------------------------------------

    def concurrent(self, port, n, path):
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            return list(ex.map(lambda _: get(port, path)[0], range(n)))

    def test_streams_pack_onto_one_connection(self):
        p = self.start()
        statuses = self.concurrent(p.port, 40, "/slow?ms=300")
        self.assertEqual(statuses, [200] * 40)
        self.assertEqual(self.backend.connections, 1)
        self.assertGreaterEqual(self.backend.max_open, 20)  # concurrent, not one at a time

    def test_peer_stream_limit_opens_more_connections(self):
        p = self.start(max_concurrent_streams=4)
        statuses = self.concurrent(p.port, 24, "/slow?ms=300")
        self.assertEqual(statuses, [200] * 24)
        self.assertLessEqual(self.backend.max_open, 4)
        self.assertEqual(self.backend.connections, 6)

    def test_pool_cap_makes_requests_wait(self):
        p = self.start(extra="    pool: { max_connections: 2 }", max_concurrent_streams=3)
        t0 = time.time()
        statuses = self.concurrent(p.port, 12, "/slow?ms=200")
        elapsed = time.time() - t0
        self.assertEqual(statuses, [200] * 12)
        self.assertEqual(self.backend.connections, 2)
        self.assertLessEqual(self.backend.max_open, 3)
        self.assertGreaterEqual(elapsed, 0.35)  # two waves of 6: the rest waited for streams

    def test_stream_gauge_follows_open_streams(self):
        p = self.start()
        with concurrent.futures.ThreadPoolExecutor(10) as ex:
            futures = [ex.submit(get, p.port, "/slow?ms=800") for _ in range(10)]
            wait_for(lambda: self.metric("bulwark_http2_streams", side="upstream", name="app") == 10,
                     timeout=3, what="10 open upstream streams")
            _, _, body = request(p.admin_port, "GET", "/status")
            endpoint = json.loads(body)["upstreams"][0]["endpoints"][0]
            self.assertEqual(endpoint["http2"], {"streams": 10, "streams_per_connection": 10.0})
            self.assertEqual(endpoint["pool"], {"active": 1, "idle": 0})
            self.assertEqual([f.result()[0] for f in futures], [200] * 10)
        wait_for(lambda: self.metric("bulwark_http2_streams", side="upstream", name="app") == 0,
                 timeout=3, what="no open upstream stream")

    # --- failures ---------------------------------------------------------------------------

    def test_refused_stream_is_sent_again_and_not_blamed(self):
        p = self.start(extra="    circuit_breaker: { consecutive_failures: 2, open_for: 30s }")
        status, _, body = get(p.port, "/refuse")
        self.assertEqual(status, 502)
        # Not processed: sent again on fresh streams (three times), then answered 502.
        self.assertEqual(self.backend.refused, 4)
        status, _, _ = get(p.port, "/")
        self.assertEqual(status, 200)  # the breaker was not opened by refusals
        self.assertEqual(self.metric("bulwark_circuit_breaker_state", upstream="app", state="open"), 0)

    def test_goaway_moves_new_requests_to_a_new_connection(self):
        p = self.start()
        self.assertEqual(get(p.port, "/goaway")[0], 200)
        time.sleep(0.2)
        for _ in range(3):
            self.assertEqual(get(p.port, "/")[0], 200)
        self.assertEqual(self.backend.connections, 2)

    def test_silent_upstream_is_found_by_ping(self):
        p = self.start(extra="    http2: { ping_interval: 200ms, ping_timeout: 300ms }",
                       silent_after_settings=True)
        t0 = time.time()
        status, headers, _ = get(p.port, "/never")
        elapsed = time.time() - t0
        self.assertEqual(status, 502)
        self.assertEqual(headers.get("x-bulwark-reason"), "upstream-reset")
        self.assertLess(elapsed, 2.0)
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertIn("PING", p.stderr_text())

    def test_idle_connection_closed_after_idle_timeout(self):
        p = self.start(extra="    pool: { idle_timeout: 300ms }")
        self.assertEqual(get(p.port, "/")[0], 200)
        self.assertEqual(self.metric("bulwark_pool_connections", upstream="app", state="idle"), 1)
        wait_for(lambda: self.metric("bulwark_pool_connections", upstream="app", state="idle") == 0,
                 timeout=3, what="the idle HTTP/2 connection closed")
        self.assertEqual(get(p.port, "/")[0], 200)
        self.assertEqual(self.backend.connections, 2)

    def test_dead_endpoint_is_a_connect_failure(self):
        self.proxy = Bulwark(CONFIG, upstream="127.0.0.1:%d" % free_port(), extra="")
        status, headers, _ = get(self.proxy.port, "/")
        self.assertEqual(status, 502)
        self.assertEqual(headers.get("x-bulwark-reason"), "upstream-connect-failure")

    def test_upstream_that_never_sends_settings_fails_waiters_together(self):
        # A TCP server that accepts and reads but never speaks HTTP/2: the first request's
        # connection waits for SETTINGS for connect_timeout, and the requests that queued
        # behind it fail with it, instead of one new connection (and timeout) after another.
        mute = socket.socket()
        mute.bind(("127.0.0.1", 0))
        mute.listen(64)
        held = []
        threading.Thread(target=lambda: [held.append(mute.accept()) for _ in range(64)],
                         daemon=True).start()
        try:
            self.proxy = Bulwark(CONFIG, upstream="127.0.0.1:%d" % mute.getsockname()[1],
                                 extra="    connect_timeout: 300ms")
            t0 = time.time()
            with concurrent.futures.ThreadPoolExecutor(10) as ex:
                results = list(ex.map(lambda _: get(self.proxy.port, "/"), range(10)))
            elapsed = time.time() - t0
            self.assertEqual([(r[0], r[1].get("x-bulwark-reason")) for r in results],
                             [(502, "upstream-connect-failure")] * 10)
            self.assertLess(elapsed, 1.5)
        finally:
            mute.close()
            for c, _ in held:
                c.close()

    def test_slow_client_backpressure_bounds_memory(self):
        p = self.start()
        self.assertEqual(get(p.port, "/")[0], 200)
        base = p.rss_kib()
        size = 48 * 1024 * 1024
        s = connect(p.port)
        s.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 65536)
        s.sendall(b"GET /big?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        time.sleep(1.5)  # the client reads nothing meanwhile
        grown = p.rss_kib() - base
        self.assertLess(grown, 24 * 1024, "RSS grew %d KiB while the client did not read" % grown)
        # Other requests on the same upstream connection still flow.
        self.assertEqual(get(p.port, "/")[0], 200)
        _, _, body = Reader(s).read_response()
        s.close()
        self.assertEqual(len(body), size)
        self.assertEqual(crc_hex(body), crc_hex(pattern(size)))


class ScriptedUpstream:
    """A raw HTTP/2 'server' for misbehaviour: on each connection it reads what Bulwark sends
    first (preface, SETTINGS, the first request's HEADERS), then writes `script` (bytes made with
    h2_client's frame helpers, or a list of such bytes and pauses in seconds) and, with `close`,
    closes."""

    def __init__(self, script, close=True):
        self.script, self.close = script, close
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except (OSError, ValueError):  # closed by stop()
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(2)
            got = b""
            while len(got) < 24 + 9 or frame_types(got[24:]).count(HEADERS) == 0:
                data = c.recv(65536)
                if not data:
                    return
                got += data
            for part in self.script if isinstance(self.script, list) else [self.script]:
                if isinstance(part, float):
                    time.sleep(part)  # the parts before it reach the client first
                else:
                    c.sendall(part)
            if self.close:
                time.sleep(0.05)
            else:
                while c.recv(65536):
                    pass
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.listener.close()


def frame_types(data):
    """The types of the whole frames in `data`."""
    types = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        types.append(data[3])
        data = data[9 + length:]
    return types


def response_headers(stream_id, fields, end_stream=False):
    block = hpack.Encoder().encode(fields)
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream_id, block)


@NEEDS_HPACK
class MisbehavingUpstreamTest(unittest.TestCase):
    """What a broken or hostile HTTP/2 upstream gets: the client a 502 with the reason (or, once
    the response went out, a cut connection), the connection's end counted, and Bulwark goes
    on serving."""

    def run_script(self, script, close=True, extra=""):
        self.upstream = ScriptedUpstream(script, close)
        self.good = H2Backend()
        config = CONFIG.replace("      - name: all\n", "      - name: good\n"
                                "        match: {{ prefix: /good }}\n        upstream: good\n"
                                "      - name: all\n")
        config += "  - name: good\n    endpoints: [{good}]\n    protocol: h2\n"
        self.proxy = Bulwark(config, upstream=self.upstream.address, good=self.good.address,
                             extra=extra)
        return get(self.proxy.port, "/x")

    def tearDown(self):
        for name in ("proxy", "upstream", "good"):
            obj = getattr(self, name, None)
            if obj:
                obj.stop()

    def still_serving(self):
        self.assertEqual(get(self.proxy.port, "/good")[0], 200)
        self.assertIsNone(self.proxy.proc.poll())

    def test_garbage_instead_of_frames(self):
        status, headers, _ = self.run_script(settings_frame() + b"HTTP/1.1 200 OK\r\n\r\n" * 4)
        self.assertEqual((status, headers.get("x-bulwark-reason")), (502, "upstream-protocol-error"))
        errors = self.proxy.metric("bulwark_http2_protocol_errors_total", side="upstream",
                                   reason="protocol_error")
        self.assertEqual(errors, 1)
        self.still_serving()

    def test_data_before_headers(self):
        status, headers, _ = self.run_script(settings_frame() + frame(DATA, END_STREAM, 1, b"early"))
        self.assertEqual(status, 502)
        self.still_serving()

    def test_invalid_status(self):
        script = settings_frame() + response_headers(1, [(":status", "2x0")], end_stream=True)
        status, headers, _ = self.run_script(script)
        self.assertEqual(status, 502)
        self.still_serving()

    def test_oversized_response_head(self):
        script = settings_frame() + response_headers(1, [(":status", "200"), ("x-big", "v" * 8000)],
                                                     end_stream=True)
        status, headers, _ = self.run_script(script, extra="    max_response_header_bytes: 1KiB")
        self.assertEqual(status, 502)
        self.assertEqual(headers.get("x-bulwark-reason"), "upstream-protocol-error")
        self.still_serving()

    def test_reset_before_the_head_went_out_is_a_502(self):
        # Head, body and reset in one read: nothing reached the client yet, so it gets a clean
        # 502 instead of a cut response.
        script = (settings_frame() +
                  response_headers(1, [(":status", "200"), ("content-length", "100000")]) +
                  frame(DATA, 0, 1, b"x" * 1000) + rst_stream(1, 2))  # INTERNAL_ERROR
        status, headers, _ = self.run_script(script, close=False)
        self.assertEqual((status, headers.get("x-bulwark-reason")), (502, "upstream-reset"))
        self.still_serving()

    def test_reset_mid_body_cuts_the_client(self):
        script = [settings_frame() +
                  response_headers(1, [(":status", "200"), ("content-length", "100000")]) +
                  frame(DATA, 0, 1, b"x" * 1000), 0.3, rst_stream(1, 2)]
        with self.assertRaises((EOFError, ConnectionError, http.client.IncompleteRead)):
            self.run_script(script, close=False)
        self.still_serving()

    def test_goaway_with_error_before_answering(self):
        goaway = frame(7, 0, 0, (0).to_bytes(4, "big") + (1).to_bytes(4, "big"))  # PROTOCOL_ERROR
        status, headers, _ = self.run_script(settings_frame() + goaway)
        self.assertEqual(status, 502)
        self.assertIn("ended its HTTP/2 connection", self.proxy.stderr_text())
        self.still_serving()

    def test_closed_right_after_settings(self):
        status, headers, _ = self.run_script(settings_frame())
        self.assertEqual(status, 502)
        self.assertEqual(headers.get("x-bulwark-reason"), "upstream-reset")
        self.still_serving()


@unittest.skipUnless(HAVE_OPENSSL, "needs the openssl command to make test certificates")
class H2UpstreamTlsTest(unittest.TestCase):
    def tearDown(self):
        for name in ("proxy", "backend"):
            obj = getattr(self, name, None)
            if obj:
                obj.stop()

    def backend_context(self, alpn):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki().server_cert, pki().server_key)
        ctx.set_alpn_protocols(alpn)
        return ctx

    def test_h2_over_tls_by_alpn(self):
        self.backend = H2Backend(ssl_context=self.backend_context(["h2"]))
        extra = '    tls: { sni: localhost, ca: "%s" }' % pki().ca
        self.proxy = Bulwark(CONFIG, upstream=self.backend.address, extra=extra)
        status, headers, body = get(self.proxy.port, "/echo", "POST", b"over tls")
        self.assertEqual((status, body), (200, b"over tls"))
        self.assertEqual(self.backend.alpn, ["h2"])
        self.assertEqual(self.proxy.metric("bulwark_tls_handshakes_total", side="upstream",
                                           result="success"), 1)

    def test_server_without_h2_in_alpn_is_refused(self):
        self.backend = H2Backend(ssl_context=self.backend_context(["http/1.1"]))
        extra = '    tls: { sni: localhost, ca: "%s" }' % pki().ca
        self.proxy = Bulwark(CONFIG, upstream=self.backend.address, extra=extra)
        status, headers, _ = get(self.proxy.port, "/")
        self.assertEqual(status, 502)
        self.assertEqual(headers.get("x-bulwark-reason"), "upstream-connect-failure")
        wait_for(lambda: "did not choose h2" in self.proxy.stderr_text(), timeout=3,
                 what="the ALPN failure logged")


class CheckProtocol(unittest.TestCase):
    BASE = ("listeners:\n  - name: in\n    listen: 127.0.0.1:8080\n"
            "    routes: [{ name: api, upstream: app }]\n"
            "upstreams:\n  - name: app\n    endpoints: [127.0.0.1:9000]\n")

    def test_valid(self):
        path, code, out, err = check(self.BASE + "    protocol: h2\n"
                                     "    http2: { max_concurrent_streams: 50, initial_window: 1MiB,"
                                     " ping_interval: 10s, ping_timeout: 2s }\n")
        self.assertEqual((code, err), (0, ""))

    def test_http_health_check_on_h2_upstream_warns(self):
        text = self.BASE + "    protocol: h2\n    health_check: { type: http, path: /healthz }\n"
        path, code, out, err = check(text)
        self.assertEqual(code, 0, err)
        self.assertRegex(err, r"warning: %s:9:\d+: upstreams\[0\]\.health_check\.type: http probes speak "
                              r"HTTP/1\.1" % path)
        path, code, out, err = check(self.BASE + "    protocol: h2\n    health_check: { type: tcp }\n")
        self.assertEqual((code, err), (0, ""))

    def test_errors_with_position(self):
        text = self.BASE + "    protocol: h3\n"
        path, code, out, err = check(text)
        self.assertNotEqual(code, 0)
        self.assertRegex(err, r"%s:8:\d+: upstreams\[0\]\.protocol: must be http1 or h2" % path)
        text = self.BASE + "    http2: { ping_interval: 1s }\n"
        path, code, out, err = check(text)
        self.assertNotEqual(code, 0)
        self.assertRegex(err, r"%s:8:\d+: upstreams\[0\]\.http2: http2 settings need protocol: h2" % path)
        text = self.BASE + "    protocol: h2\n    http2: { initial_window: 10 }\n"
        path, code, out, err = check(text)
        self.assertNotEqual(code, 0)
        self.assertRegex(err, r"%s:9:\d+: upstreams\[0\]\.http2\.initial_window: must be between" % path)


if __name__ == "__main__":
    unittest.main()
