"""Upstream response framing: every case of conformance_responses.RESPONSE_CASES replayed by a
raw backend, checked at the client (status, body bytes, interim responses, trailers, closed or
kept) and at the backend (a broken upstream connection is never reused); plus the bound on
response heads (max_response_header_bytes) and what protocol errors count for."""
import json
import random
import socket
import threading
import time
import unittest

from conformance_responses import RESPONSE_CASES, replay
from harness import SANITIZED, Bulwark, request

PROBE_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nprobe"
ENDLESS_BYTES = 50 << 20

CONFIG = """
workers: 1
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app, timeout: 5s }}
upstreams:
  - name: app
    endpoints: [{upstream}]
    pool: {{ max_connections: 16, max_idle: 4, idle_timeout: 30s }}
{extra}
"""


class ReplayBackend:
    """A raw HTTP/1.1 backend. GET /case/NAME is answered with that case's bytes, /probe/* with
    PROBE_RESPONSE (then the connection is closed, so each case starts on a new upstream
    connection), /endless with a response head that never ends. Each request is recorded as
    (path, number of the connection it came on)."""

    def __init__(self, cases):
        self.cases = {c["name"]: c for c in cases}
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.lock = threading.Lock()
        self.requests = []
        self.connections = 0
        self.endless_sent = 0
        self.endless_done = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.listener.close()

    def connection_of(self, path):
        with self.lock:
            found = [conn for p, conn in self.requests if p == path]
        return found[-1] if found else None

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                number = self.connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn, number):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                with self.lock:
                    self.requests.append((path, number))
                if path.startswith("/probe/"):
                    conn.sendall(PROBE_RESPONSE)
                    return
                if path == "/endless":
                    self._endless(conn)
                    return
                if replay(conn, self.cases[path.split("/")[2]]):
                    return
        except OSError:
            pass  # Bulwark closed a connection it no longer trusts
        finally:
            conn.close()

    def _endless(self, conn):
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Endless: ")
            block = b"a" * (1 << 20)
            while self.endless_sent < ENDLESS_BYTES:
                conn.sendall(block)
                self.endless_sent += len(block)
        except OSError:
            pass
        finally:
            self.endless_done.set()


class ClientConnection:
    """A client socket that reads HTTP/1.1 responses and tells a truncated one from a whole one."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, marker):
        while marker not in self.buf:
            if not self._fill():
                return None
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n and self._fill():
            pass
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self):
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def closed_by_peer(self):
        """True when the peer closes (at once, or within a second)."""
        if self.buf:
            return False
        self.sock.settimeout(1)
        try:
            return not self._fill()
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(5)

    def read_head(self):
        head = self.read_until(b"\r\n\r\n")
        if head is None:
            return None
        lines = head.decode("latin-1").split("\r\n")
        version, status = lines[0].split(" ")[0], int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, v = line.split(":", 1)
                k, v = k.strip().lower(), v.strip()
                headers[k] = v if k not in headers else headers[k] + ", " + v
        return version, status, headers

    def read_response(self, method="GET", interim=None):
        """Returns a dict: interim [(status, headers)], status (None: closed without one),
        version, headers, body, trailers, complete."""
        r = dict(interim=interim if interim is not None else [], status=None, version=None,
                 headers={}, body=b"", trailers={}, complete=False)
        while True:
            head = self.read_head()
            if head is None:
                return r
            version, status, headers = head
            if 100 <= status < 200 and status != 101:
                r["interim"].append((status, headers))
                continue
            break
        r.update(version=version, status=status, headers=headers)
        if method == "HEAD" or status in (204, 304):
            r["complete"] = True
        elif status == 101:
            r["body"], r["complete"] = self.read_to_eof(), True
        elif "chunked" in headers.get("transfer-encoding", ""):
            while True:
                line = self.read_until(b"\r\n")
                if line is None:
                    return r
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while True:
                        field = self.read_until(b"\r\n")
                        if field is None:
                            return r
                        if field == b"\r\n":
                            r["complete"] = True
                            return r
                        name, _, value = field.decode("latin-1").partition(":")
                        r["trailers"][name.strip().lower()] = value.strip()
                data = self.read_exact(size + 2)
                r["body"] += data[:size]
                if len(data) < size + 2:
                    return r
        elif "content-length" in headers:
            n = int(headers["content-length"])
            r["body"] = self.read_exact(n)
            r["complete"] = len(r["body"]) == n
        else:
            r["body"], r["complete"] = self.read_to_eof(), True
        return r


def request_bytes(case, path):
    method = case.get("method", "GET")
    lines = ["%s %s HTTP/%s" % (method, path, case.get("client_version", "1.1")), "Host: x"]
    lines += ["%s: %s" % kv for kv in case.get("request_headers", [])]
    body = case.get("request_body", b"")
    if body:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body


def summary(r):
    """What the client saw, short enough for a failure message."""
    def cut(v):
        v = repr(v)
        return v if len(v) <= 120 else v[:120] + "...(%d chars)" % len(v)
    out = {k: cut(v) for k, v in r.items() if k not in ("headers", "outcomes")}
    out["headers"] = {k: cut(v) for k, v in r["headers"].items()}
    return out


def outcomes(proxy):
    counts = {}
    for line in proxy.metrics().splitlines():
        if line.startswith("bulwark_upstream_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = counts.get(outcome, 0) + float(value)
    return counts


class UpstreamConformance(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.backend = ReplayBackend(RESPONSE_CASES)
        cls.proxy = Bulwark(CONFIG, upstream=cls.backend.address, extra="")

    @classmethod
    def tearDownClass(cls):
        code = cls.proxy.stop()
        cls.backend.stop()
        if code not in (0, None):
            raise AssertionError("bulwark exited with %s:\n%s" % (code, cls.proxy.stderr_text()))

    def run_case(self, case):
        """Sends the case's request and returns what the client and the backend saw."""
        name = case["name"]
        method = case.get("method", "GET")
        before = outcomes(self.proxy)
        client = ClientConnection(self.proxy.port)
        head, body = request_bytes(case, "/case/" + name)
        interim = []
        if body and ("Expect", "100-continue") in case.get("request_headers", []):
            client.send(head)
            version, status, headers = client.read_head()
            self.assertEqual(status, 100, "Bulwark's own 100 Continue")
            interim.append((status, headers))
            client.send(body)
        else:
            client.send(head + body)
        r = client.read_response(method, interim)
        keep_alive = (r["complete"] and r["status"] not in (None, 101) and
                      r["headers"].get("connection", "").lower() != "close" and
                      r["version"] == "HTTP/1.1" and
                      ("content-length" in r["headers"] or
                       "chunked" in r["headers"].get("transfer-encoding", "") or
                       method == "HEAD" or r["status"] in (204, 304)))
        r["closed"] = not keep_alive and (client.eof or client.closed_by_peer())
        # What was counted for the attempt, before the probe adds its own success.
        r["outcomes"] = before
        expected = case.get("expect_outcome")
        deadline = time.time() + 2
        while True:
            after = outcomes(self.proxy)
            if not expected or after.get(expected, 0) > before.get(expected, 0) or time.time() > deadline:
                break
            time.sleep(0.01)
        r["outcome_delta"] = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        # The probe: on the same client connection when it is open (it must be usable), else
        # on a new one. It shows whether the case's upstream connection was reused.
        probe_path = "/probe/" + name
        if keep_alive:
            client.send(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % probe_path).encode())
            probe = client.read_response()
            r["closed"] = probe["status"] is None
            if probe["status"] is None:
                client.close()
                client = ClientConnection(self.proxy.port)
                client.send(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % probe_path).encode())
                probe = client.read_response()
        else:
            client.close()
            client = ClientConnection(self.proxy.port)
            client.send(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % probe_path).encode())
            probe = client.read_response()
        client.close()
        self.assertEqual((probe["status"], probe["body"]), (200, b"probe"), "the probe after it")
        case_conn = self.backend.connection_of("/case/" + name)
        r["upstream_reused"] = case_conn is not None and case_conn == self.backend.connection_of(probe_path)
        return r

    def check_case(self, case, r):
        status = case["expect_status"]
        truncated = case.get("expect_truncated", False)
        if case.get("may_truncate") and r["status"] not in (None, status) and not r["complete"]:
            truncated = True  # the head had gone out: a truncated response is right as well
            status = r["status"]
        self.assertEqual(r["status"], status, summary(r))
        if truncated:
            self.assertFalse(r["complete"], "a truncated body is never passed off as complete")
            self.assertTrue(r["closed"], "the client connection is closed")
        else:
            self.assertTrue(r["complete"], summary(r))
            reason = case.get("expect_reason")
            self.assertEqual(r["headers"].get("x-bulwark-reason"), reason, summary(r))
            if case.get("expect_detail"):
                detail = json.loads(r["body"])["detail"]
                self.assertIn(case["expect_detail"], detail)
            self.assertEqual(r["closed"], case.get("expect_closed", False), "client connection closed")
            if "expect_client_body" in case:
                self.assertEqual(r["body"], case["expect_client_body"])
            if "expect_trailers" in case or r["trailers"]:
                self.assertEqual(r["trailers"], case.get("expect_trailers", {}))
        if not (truncated or ("expect_interim" in case and case["expect_interim"] is None)):
            self.assertEqual([s for s, _ in r["interim"]], case.get("expect_interim", []), "1xx")
        if case.get("expect_interim_headers"):
            for k, v in case["expect_interim_headers"].items():
                self.assertEqual(r["interim"][0][1].get(k), v)
        for k, v in case.get("expect_headers", {}).items():
            self.assertEqual(r["headers"].get(k), v, summary(r))
        for k in case.get("absent_headers", []):
            self.assertNotIn(k, r["headers"])
        self.assertEqual(r["upstream_reused"], case.get("expect_upstream_reused", False),
                         "upstream connection reused")
        if case.get("expect_outcome"):
            self.assertGreaterEqual(r["outcome_delta"].get(case["expect_outcome"], 0), 1, r["outcome_delta"])

    def test_response_cases(self):
        names = [c["name"] for c in RESPONSE_CASES]
        self.assertEqual(len(names), len(set(names)), "case names are unique")
        for case in RESPONSE_CASES:
            with self.subTest(case=case["name"]):
                self.check_case(case, self.run_case(case))

    def test_mutated_responses_never_break_the_proxy(self):
        """Random damage to the table's responses (bytes flipped, CR/LF/NUL inserted, cut
        short, sent in two reads): every request gets an answer or a closed connection, and
        the proxy lives on."""
        rng = random.Random(1234)
        sources = [c["response"] for c in RESPONSE_CASES if len(c["response"]) < 4096]
        for i in range(300):
            data = bytearray(rng.choice(sources))
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(data) + 1)
                op = rng.randrange(4)
                if op == 0 and at < len(data):
                    data[at] = rng.randrange(256)
                elif op == 1:
                    data[at:at] = rng.choice([b"\r", b"\n", b"\x00", b" ", b"\r\n", b";", b"0"])
                elif op == 2:
                    del data[at:]
                elif at < len(data):
                    del data[at]
            name = "mutated_%d" % i
            case = dict(name=name, response=bytes(data), close_after=True)
            if data and rng.random() < 0.5:  # across two reads, to exercise the scanners' state
                case.update(split_at=[rng.randrange(len(data))], split_pause=0.002)
            self.backend.cases[name] = case
            client = ClientConnection(self.proxy.port)
            client.send(b"GET /case/%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % name.encode())
            r = client.read_response()
            client.close()
            self.assertTrue(r["status"] is None or 100 <= r["status"] <= 599, (data, r["status"]))
        self.assertIsNone(self.proxy.proc.poll(), "bulwark is still running")
        status, _, body = request(self.proxy.port, "GET", "/case/content_length")
        self.assertEqual((status, body), (200, b"hello"))

    def test_endless_response_head_is_cut_at_the_limit(self):
        """A head that never ends must not grow memory; the client gets 502."""
        rss_before = self.proxy.rss_kib()
        started = time.time()
        status, h, body = request(self.proxy.port, "GET", "/endless", timeout=10)
        elapsed = time.time() - started
        self.assertEqual(status, 502)
        self.assertEqual(h["x-bulwark-reason"], "upstream-protocol-error")
        self.assertIn("max_response_header_bytes", json.loads(body)["detail"])
        self.assertLess(elapsed, 2.0, "answered as soon as the limit was passed")
        self.assertTrue(self.backend.endless_done.wait(5), "the upstream connection was closed")
        self.assertLess(self.backend.endless_sent, ENDLESS_BYTES, "Bulwark stopped reading")
        if not SANITIZED:
            growth = self.proxy.rss_kib() - rss_before
            self.assertLess(growth, 8 * 1024, "RSS grew by %d KiB" % growth)


class LimitAndBreaker(unittest.TestCase):
    """A configured max_response_header_bytes, and protocol errors counted against the endpoint."""

    CASES = [
        dict(name="small_head", response=b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 900 + b"\r\n"
                                         b"Content-Length: 2\r\n\r\nok"),
        dict(name="big_head", response=b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 2000 + b"\r\n"
                                       b"Content-Length: 2\r\n\r\nok"),
    ]

    @classmethod
    def setUpClass(cls):
        cls.backend = ReplayBackend(cls.CASES)
        extra = ("    max_response_header_bytes: 1KiB\n"
                 "    circuit_breaker: { consecutive_failures: 2, open_for: 30s }")
        cls.proxy = Bulwark(CONFIG, upstream=cls.backend.address, extra=extra)

    @classmethod
    def tearDownClass(cls):
        code = cls.proxy.stop()
        cls.backend.stop()
        if code not in (0, None):
            raise AssertionError("bulwark exited with %s:\n%s" % (code, cls.proxy.stderr_text()))

    def test_limit_and_breaker(self):
        _, _, body = request(self.proxy.admin_port, "GET", "/config")
        self.assertEqual(json.loads(body)["upstreams"][0]["max_response_header_bytes"], 1024)
        status, _, body = request(self.proxy.port, "GET", "/case/small_head")
        self.assertEqual((status, body), (200, b"ok"))
        for _ in range(2):
            status, h, body = request(self.proxy.port, "GET", "/case/big_head")
            self.assertEqual(status, 502)
            self.assertEqual(h["x-bulwark-reason"], "upstream-protocol-error")
        self.assertEqual(self.proxy.metric_eventually(2.0, "bulwark_upstream_requests_total",
                                                      outcome="protocol_error"), 2.0)
        self.assertIn(self.proxy.metric("bulwark_upstream_requests_total", outcome="reset"), (0.0, None))
        # Two protocol errors in a row opened the endpoint's breaker.
        status, h, _ = request(self.proxy.port, "GET", "/case/small_head")
        self.assertEqual((status, h["x-bulwark-reason"]), (503, "circuit-open"))


if __name__ == "__main__":
    unittest.main()
