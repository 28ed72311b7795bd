"""Chaos on the client side: slowloris connections (heads trickled a byte at a time, and
connections that never send anything), clients that never read a large response, and
clients that shut down their write side right after the request. Others keep being served,
the header timeout is enforced with 408 request-timeout, memory stays bounded under
backpressure, half-closed clients still get their whole response, and descriptors and RSS
come back to their baseline once the clients are gone."""
import select
import socket
import threading
import time

from chaos import (SANITIZED, Baseline, Bulwark, ChaosTest, Reader, Testd, check_answer,
                   connect, harness, request, rss_kib, rst_close, run_clients)

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    timeouts: {{ header: {header}, idle: {idle} }}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app, timeout: 20s }}
upstreams:
  - name: app
    endpoints: [{upstream}]
    pool: {{ max_idle: 2 }}
"""


class ClientChaos(ChaosTest):
    def setUp(self):
        self.backend = Testd()
        self.on_teardown(self.backend.stop)

    def start(self, header="1s", idle="2s"):
        self.proxy = Bulwark(TEMPLATE, upstream=self.backend.address, header=header, idle=idle)
        self.warm()
        return Baseline(self.proxy.proc.pid)

    def test_slowloris(self):
        base = self.start(header="1s", idle="2s")
        head = b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"
        trickle = [connect(self.proxy.port) for _ in range(40)]
        silent = [connect(self.proxy.port) for _ in range(10)]
        answers = {}
        sent = {s: 0 for s in trickle}
        started = time.time()
        served = []

        def others():  # well-behaved clients meanwhile
            while time.time() - started < 2.0:
                t = time.time()
                status, h, body = request(self.proxy.port, "GET", "/fine?size=1000")
                served.append((status, time.time() - t))
                time.sleep(0.05)

        th = threading.Thread(target=others)
        th.start()
        open_ = set(trickle)
        while open_ and time.time() - started < 6:
            for s in list(open_):
                if sent[s] < len(head) - 1:  # never the last byte
                    try:
                        s.send(head[sent[s]:sent[s] + 1])
                        sent[s] += 1
                    except OSError:
                        pass
            readable = select.select(list(open_), [], [], 0.1)[0]
            for s in readable:
                s.settimeout(5)
                try:
                    status, h, body = Reader(s).read_response()
                    answers[s] = (status, h, body, time.time() - started)
                except (EOFError, OSError) as e:
                    answers[s] = ("closed: %r" % e, {}, b"", time.time() - started)
                open_.discard(s)
        th.join()
        self.assertEqual(open_, set(), "slowloris connections still open after 6 s")
        for status, h, body, at in answers.values():
            self.assertEqual(check_answer(self, status, h, body, allowed_reasons=("request-timeout",)),
                             "request-timeout")
            self.assertLess(at, 3.5)
        self.assertGreater(len(served), 5)
        self.assertTrue(all(st == 200 for st, _ in served), served)
        self.assertLess(max(t for _, t in served), 1.0)
        # Connections that never sent a byte: closed by the idle timeout (2 s), an empty
        # answer or a 408 both acceptable, never held forever.
        for s in silent:
            s.settimeout(5)
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            self.assertTrue(data == b"" or data.startswith(b"HTTP/1.1 408"), data[:100])
        for s in trickle + silent:
            s.close()
        self.assert_alive()
        base.check(self)

    def test_clients_that_never_read(self):
        base = self.start(header="5s", idle="30s")
        size = 16 << 20
        stalled = []
        for _ in range(12):
            s = connect(self.proxy.port)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            s.sendall(b"GET /big?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
            stalled.append(s)
        pipelined = []
        for _ in range(3):  # and some that pipeline 200 requests of 1 MB and read nothing
            s = connect(self.proxy.port)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            s.setblocking(False)
            try:
                for _ in range(200):
                    s.send(b"GET /p?size=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            except BlockingIOError:
                pass
            pipelined.append(s)
        time.sleep(2.0)  # the proxy has read as much from the backend as it will
        peak = rss_kib(self.proxy.proc.pid)
        # Meanwhile others are served at once.
        for _ in range(5):
            t = time.time()
            status, h, body = request(self.proxy.port, "GET", "/small?size=100000")
            self.assertEqual(status, 200)
            self.assertEqual(harness.crc_hex(body), h["x-testd-crc32"])
            self.assertLess(time.time() - t, 1.0)
        if not SANITIZED:
            # 12 x 16 MiB (+ 600 x 1 MB pipelined) if buffered; bounded buffering keeps it to a
            # few MiB each.
            self.assertLess(peak - base.rss, 48 * 1024,
                            "RSS grew %d KiB with 12 stalled readers" % (peak - base.rss))
        # One stalled client reads after all: the body is complete and intact.
        r = Reader(stalled[0])
        stalled[0].settimeout(20)
        status, h, body = r.read_response()
        self.assertEqual((status, len(body)), (200, size))
        self.assertEqual(harness.crc_hex(body), h["x-testd-crc32"])
        # The pipelining clients were not answered ahead of their reading: the backend saw
        # only a few of their 600 requests.
        self.assertLess(self.backend.stats()["requests"], 100)
        for s in stalled + pipelined:
            rst_close(s)
        self.assert_alive()
        base.check(self, timeout=10)

    def test_half_closed_clients_get_their_response(self):
        base = self.start(header="5s", idle="30s")

        def one(i):
            s = connect(self.proxy.port)
            try:
                if i % 2:
                    body = bytes(range(256)) * 64
                    s.sendall(b"POST /echo?echo=1&delay=200 HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: %d\r\n\r\n" % len(body) + body)
                    s.shutdown(socket.SHUT_WR)
                    status, h, got = Reader(s).read_response()
                    self.assertEqual((status, got), (200, body))
                else:
                    s.sendall(b"GET /half?size=1000000&delay=200 HTTP/1.1\r\nHost: x\r\n\r\n")
                    s.shutdown(socket.SHUT_WR)
                    status, h, got = Reader(s).read_response()
                    self.assertEqual((status, len(got)), (200, 1000000))
                    self.assertEqual(harness.crc_hex(got), h["x-testd-crc32"])
                # and then the proxy closes its side
                s.settimeout(5)
                self.assertEqual(s.recv(100), b"")
                return status
            finally:
                s.close()

        results = run_clients(24, one, threads=6)
        # Pipelined requests, then the write side shut: every response still comes.
        s = connect(self.proxy.port)
        s.sendall(b"GET /p?size=5000&delay=100 HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        s.shutdown(socket.SHUT_WR)
        r = Reader(s)
        self.assertEqual([r.read_response()[0] for _ in range(3)], [200] * 3)
        s.close()
        self.assertEqual([r for r in results if isinstance(r, Exception)], [])
        self.assert_alive()
        base.check(self)


if __name__ == "__main__":
    import unittest
    unittest.main()
