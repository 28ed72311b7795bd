"""Chaos on the upstream side: a backend killed in the middle of a response body, resets at
every phase of an exchange (connect, after the request head, mid-body, on an idle pooled
connection), garbage and never-ending response heads. Every client gets a correct response
or the documented local reply (a response that broke after its head is cut short, never
passed off as complete), Bulwark stays up, and its descriptors and RSS come back to their
baseline once the clients are gone."""
import random
import socket
import time

from chaos import (Baseline, Bulwark, ChaosTest, RawBackend, Reader, Testd, check_answer,
                   connect, free_port, request, rst_close, run_clients, wait_for)

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app, timeout: {timeout} }}
upstreams:
  - name: app
    endpoints: [{upstream}]
    connect_timeout: 500ms
    max_response_header_bytes: 16KiB
    pool: {{ max_idle: 2 }}
"""

BIG = 24 << 20  # large enough that the body is still in flight when the backend dies


def get(port, path, timeout=10):
    return request(port, "GET", path, timeout=timeout)


class UpstreamChaos(ChaosTest):
    def start(self, upstream, timeout="5s"):
        self.proxy = Bulwark(TEMPLATE, upstream=upstream, timeout=timeout)

    def make_testd(self, *args):
        t = Testd(*args)
        self.on_teardown(t.stop)
        return t

    def raw(self, handler, on_accept=False):
        b = RawBackend(handler, on_accept=on_accept)
        self.on_teardown(b.stop)
        return b

    def test_backend_killed_mid_body(self):
        """Clients are in the middle of large bodies when the backend is SIGKILLed: each sees
        the 200 head, then the connection closes before Content-Length bytes (never a complete
        response). A restarted backend on the same port serves again."""
        port = free_port()
        backend = Testd("--port", str(port))
        self.on_teardown(lambda: backend.stop())
        self.start(backend.address)
        self.warm()
        base = Baseline(self.proxy.proc.pid)
        clients = []
        for i in range(4):
            s = connect(self.proxy.port)
            path = "/big?size=%d" % BIG + ("&chunked=1" if i % 2 else "")
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
            r = Reader(s)
            _, status, headers = r.read_head()
            self.assertEqual(status, 200)
            r.read_exact(256 << 10) if "content-length" in dict(headers) else r.read_until(b"\r\n")
            clients.append((s, r, dict(headers)))
        backend.stop()  # SIGKILL
        for s, r, headers in clients:
            s.settimeout(10)
            with self.assertRaises((EOFError, ConnectionResetError, ValueError)):
                if "content-length" in headers:
                    r.read_exact(int(headers["content-length"]))
                else:  # chunked: the last chunk must never come
                    r.read_until(b"\r\n0\r\n\r\n")
                    raise AssertionError("a broken chunked body was terminated as complete")
            s.close()
        self.assert_alive()
        # While it is down: the documented 502s.
        status, h, body = get(self.proxy.port, "/down")
        check_answer(self, status, h, body, allowed_reasons=("upstream-connect-failure",), what="down")
        backend = Testd("--port", str(port))
        self.on_teardown(lambda: backend.stop())
        wait_for(lambda: get(self.proxy.port, "/back")[0] == 200, what="served again")
        base.check(self)

    def test_backend_killed_mid_upload(self):
        """A backend SIGKILLed while clients are uploading 8 MiB bodies: each gets 502
        upstream-reset (upstream-connect-failure if its connection was still being made; or
        its connection closed if the reply could not be written while it
        was still sending); a restarted backend serves again."""
        port = free_port()
        backend = Testd("--port", str(port))
        self.on_teardown(lambda: backend.stop())
        self.start(backend.address)
        self.warm()
        base = Baseline(self.proxy.proc.pid)
        size, piece = 8 << 20, b"u" * 65536
        clients = []
        for _ in range(3):
            s = connect(self.proxy.port)
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(16):  # 1 MiB of it
                s.sendall(piece)
            clients.append(s)
        backend.stop()  # SIGKILL
        for s in clients:
            s.settimeout(10)
            try:
                for _ in range(size // len(piece) - 16):
                    s.sendall(piece)
            except OSError:
                pass  # the proxy stopped reading and closed: acceptable
            try:
                status, h, body = Reader(s).read_response()
            except (EOFError, ConnectionResetError):
                s.close()
                continue
            check_answer(self, status, h, body, allowed_reasons=("upstream-reset", "upstream-connect-failure"),
                         what="upload")
            self.assertIsNotNone(h.get("x-bulwark-reason"))
            s.close()
        self.assert_alive()
        backend = Testd("--port", str(port))
        self.on_teardown(lambda: backend.stop())
        wait_for(lambda: get(self.proxy.port, "/back")[0] == 200, what="served again")
        base.check(self)

    def test_reset_at_every_phase(self):
        """Resets during connect (a listener that RSTs what it accepts), right after the request
        head, in the middle of the body and on idle pooled connections, mixed with healthy
        requests from several clients at once."""
        healthy = self.make_testd()
        rst_on_accept = self.raw(lambda c, _: rst_close(c), on_accept=True)

        def reset_idle(c, head):  # answers, then resets the idle keep-alive connection
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            time.sleep(0.05)
            rst_close(c)

        idle_reset = self.raw(reset_idle)
        closed = "127.0.0.1:%d" % free_port()
        template = TEMPLATE.replace("    routes:\n", """    routes:
      - {{ name: closed, match: {{ prefix: /closed }}, upstream: closed }}
      - {{ name: rstaccept, match: {{ prefix: /rstaccept }}, upstream: rstaccept }}
      - {{ name: idlereset, match: {{ prefix: /idlereset }}, upstream: idlereset }}
""") + """
  - {{ name: closed, endpoints: [{closed}], connect_timeout: 500ms }}
  - {{ name: rstaccept, endpoints: [{rstaccept}] }}
  - {{ name: idlereset, endpoints: [{idlereset}] }}
"""
        self.proxy = Bulwark(template, upstream=healthy.address, timeout="5s", closed=closed,
                             rstaccept=rst_on_accept.address, idlereset=idle_reset.address)
        self.warm()
        base = Baseline(self.proxy.proc.pid)
        cases = [
            ("/ok?size=5000", ()),
            ("/closed", ("upstream-connect-failure",)),
            ("/rstaccept", ("upstream-reset", "upstream-connect-failure")),
            ("/r?reset=before", ("upstream-reset",)),
            ("/r?reset=reused", ()),  # a stale pooled connection: replayed, answered 200
            ("/idlereset", ()),
            ("/mid?reset=after&size=200000", "truncated"),
        ]
        rng = random.Random(7)
        plan = [rng.choice(cases) for _ in range(140)]

        def one(i):
            path, allowed = plan[i]
            if allowed == "truncated":
                s = connect(self.proxy.port)
                try:
                    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
                    r = Reader(s)
                    _, status, headers = r.read_head()
                    if status != 200:  # the reset may come before the head is forwarded
                        return "local %d" % status
                    try:
                        r.read_exact(int(dict(headers)["content-length"]))
                    except (EOFError, ConnectionResetError):
                        return "truncated"
                    return "complete?!"
                finally:
                    s.close()
            # keep-alive clients: two requests on one connection, with a pause in between
            s = connect(self.proxy.port)
            try:
                r = Reader(s)
                out = []
                for _ in range(2):
                    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
                    status, h, body = r.read_response()
                    out.append(check_answer(self, status, h, body, allowed_reasons=allowed, what=path))
                    if h.get("connection") == "close":
                        break
                    time.sleep(0.1)
                return out
            finally:
                s.close()

        results = run_clients(len(plan), one, threads=6)
        errors = [(plan[i][0], r) for i, r in enumerate(results) if isinstance(r, Exception)]
        self.assertEqual(errors, [])
        truncated = [r for r in results if isinstance(r, str)]
        self.assertNotIn("complete?!", truncated)
        self.assert_alive()
        self.assertGreaterEqual(self.proxy.metric("bulwark_pool_stale_retries_total") or 0, 1)
        base.check(self)

    def test_garbage_and_endless_heads(self):
        """Backends that answer random bytes, send bytes after a complete response (the
        connection must not be reused: they never reach the next client), close without
        answering, or send a head that never ends (fast: past max_response_header_bytes;
        slow: until the route timeout). Answers: 502 upstream-protocol-error /
        upstream-reset, 200 "ok", 502 upstream-reset, 504 upstream-timeout; the endless
        backends' connections are dropped by Bulwark."""
        rng = random.Random(11)
        closed_by_proxy = []

        def garbage(c, head):
            c.sendall(bytes(rng.randrange(256) for _ in range(rng.randint(1, 2000))))
            time.sleep(0.05)

        def endless_fast(c, head):
            c.sendall(b"HTTP/1.1 200 OK\r\n")
            try:
                while True:
                    c.sendall(b"X-Endless: " + b"a" * 1000 + b"\r\n")
            except OSError:
                closed_by_proxy.append("fast")

        def endless_slow(c, head):
            c.sendall(b"HTTP/1.1 200 OK\r\n")
            try:
                for _ in range(400):  # 20 s at most
                    c.sendall(b"X-Slow: a\r\n")
                    time.sleep(0.05)
            except OSError:
                closed_by_proxy.append("slow")

        def extra(c, head):  # a second, unsolicited response right after the first
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
            return True

        def fin(c, head):  # closes its side without answering
            c.shutdown(socket.SHUT_WR)
            time.sleep(0.2)

        g, ef, es = self.raw(garbage), self.raw(endless_fast), self.raw(endless_slow)
        ex, fn = self.raw(extra), self.raw(fin)
        template = TEMPLATE.replace("    routes:\n", """    routes:
      - {{ name: garbage, match: {{ prefix: /garbage }}, upstream: garbage }}
      - {{ name: fast, match: {{ prefix: /fast }}, upstream: fast }}
      - {{ name: slow, match: {{ prefix: /slow }}, upstream: slow, timeout: 800ms }}
      - {{ name: extra, match: {{ prefix: /extra }}, upstream: extra }}
      - {{ name: fin, match: {{ prefix: /fin }}, upstream: fin }}
""") + """
  - {{ name: garbage, endpoints: [{garbage}] }}
  - {{ name: fast, endpoints: [{fast}], max_response_header_bytes: 16KiB }}
  - {{ name: slow, endpoints: [{slow}] }}
  - {{ name: extra, endpoints: [{extra}] }}
  - {{ name: fin, endpoints: [{fin}] }}
"""
        healthy = self.make_testd()
        self.proxy = Bulwark(template, upstream=healthy.address, timeout="5s", garbage=g.address,
                             fast=ef.address, slow=es.address, extra=ex.address, fin=fn.address)
        self.warm()
        base = Baseline(self.proxy.proc.pid)
        plan = ["/garbage"] * 30 + ["/fast"] * 10 + ["/slow"] * 4 + ["/ok"] * 20 + ["/extra"] * 10 + ["/fin"] * 6
        random.Random(3).shuffle(plan)
        allowed = {"/garbage": ("upstream-protocol-error", "upstream-reset"),
                   "/fast": ("upstream-protocol-error",), "/slow": ("upstream-timeout",),
                   "/ok": (), "/extra": (), "/fin": ("upstream-reset",)}

        def one(i):
            start = time.time()
            status, h, body = get(self.proxy.port, plan[i])
            reason = check_answer(self, status, h, body, allowed_reasons=allowed[plan[i]], what=plan[i])
            if plan[i] == "/extra":  # the unsolicited bytes never reach anyone
                self.assertEqual(body, b"ok")
            if plan[i] not in ("/ok", "/extra"):
                self.assertIsNotNone(reason, "%s answered as if it were fine" % plan[i])
            if plan[i] == "/slow":
                self.assertLess(time.time() - start, 3)
            return reason

        results = run_clients(len(plan), one, threads=6)
        self.assertEqual([r for r in results if isinstance(r, Exception)], [])
        self.assert_alive()
        wait_for(lambda: closed_by_proxy.count("fast") == 10, what="every endless head dropped")
        wait_for(lambda: closed_by_proxy.count("slow") == 4, what="every slow head dropped")
        base.check(self)


if __name__ == "__main__":
    import unittest
    unittest.main()
