"""Keep-alive on both sides, pipelined requests answered in order, HTTP/1.0 clients."""
import socket
import unittest

from harness import ProxyTest, Reader, connect, pattern


class KeepAlive(ProxyTest):
    def test_client_connection_serves_many_requests(self):
        s = connect(self.proxy.port)
        r = Reader(s)
        for i in range(20):
            s.sendall(b"GET /k?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            status, h, body = r.read_response()
            self.assertEqual((status, body), (200, pattern(i)))
            self.assertNotIn("connection", h)
        s.close()

    def test_upstream_connections_are_reused(self):
        before = self.backend.stats()["connections_total"]
        for _ in range(30):
            status, _, _ = self.get("/reuse")
            self.assertEqual(status, 200)
        after = self.backend.stats()["connections_total"]
        # 30 client connections, sequential: one pooled upstream connection serves them all
        # (the /__stats call itself adds one direct connection).
        self.assertLessEqual(after - before, 2)

    def test_pipelined_requests_answered_in_order(self):
        s = connect(self.proxy.port)
        reqs = b"".join(b"GET /p?size=%d&delay=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (n, d)
                        for n, d in ((10, 50), (20, 0), (30, 10)))
        reqs += b"POST /p?size=5 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        s.sendall(reqs)
        r = Reader(s)
        for n in (10, 20, 30, 5):
            status, h, body = r.read_response()
            self.assertEqual((status, len(body)), (200, n))
        s.close()

    def test_many_pipelined_requests_in_one_write_answered_in_order(self):
        # Responses of one loop turn are held and sent together (net/turn_writes.h); every
        # 25th is larger than what is held (16 KiB), so it goes at once after the held ones.
        sizes = [20000 + i if i % 25 == 7 else (i * 37) % 900 for i in range(300)]
        s = connect(self.proxy.port)
        s.sendall(b"".join(b"GET /m?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in sizes))
        r = Reader(s)
        for n in sizes:
            status, _, body = r.read_response()
            self.assertEqual((status, len(body)), (200, n))
            self.assertEqual(body, pattern(n))
        s.close()

    def test_half_close_after_pipelined_requests_gets_every_response_then_fin(self):
        s = connect(self.proxy.port)
        s.sendall(b"".join(b"GET /h?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n
                           for n in range(40)))
        s.shutdown(socket.SHUT_WR)
        r = Reader(s)
        for n in range(40):
            status, _, body = r.read_response()
            self.assertEqual((status, body), (200, pattern(n)))
        self.assertEqual(s.recv(1), b"")  # the FIN comes after the last held response
        s.close()

    def test_pipelined_request_split_across_packets(self):
        s = connect(self.proxy.port)
        data = b"GET /a?size=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /b?size=2 HTTP/1.1\r\nHo"
        s.sendall(data)
        r = Reader(s)
        self.assertEqual(r.read_response()[2], pattern(1))
        s.sendall(b"st: x\r\n\r\n")
        self.assertEqual(r.read_response()[2], pattern(2))
        s.close()

    def test_http10_client_closes_by_default(self):
        s = connect(self.proxy.port)
        s.sendall(b"GET /old?size=7 HTTP/1.0\r\n\r\n")
        r = Reader(s)
        status, h, body = r.read_response()
        self.assertEqual((status, body, h[":version"]), (200, pattern(7), "HTTP/1.0"))
        self.assertEqual(s.recv(1), b"")  # closed by the proxy
        s.close()

    def test_http10_keep_alive(self):
        s = connect(self.proxy.port)
        r = Reader(s)
        for n in (3, 4):
            s.sendall(b"GET /old?size=%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % n)
            status, h, body = r.read_response()
            self.assertEqual((status, body), (200, pattern(n)))
            self.assertEqual(h.get("connection", "").lower(), "keep-alive")
        s.close()

    def test_http10_client_gets_unframed_body_for_chunked_upstream(self):
        s = connect(self.proxy.port)
        s.sendall(b"GET /old?size=3000&chunked=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, h, body = Reader(s).read_response()
        self.assertNotIn("transfer-encoding", h)
        self.assertEqual(body, pattern(3000))
        s.close()

    def test_connection_close_from_client(self):
        s = connect(self.proxy.port)
        s.sendall(b"GET /c?size=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, h, body = Reader(s).read_response()
        self.assertEqual(h.get("connection"), "close")
        self.assertEqual(s.recv(1), b"")
        s.close()

    def test_upstream_connection_close_is_honoured(self):
        for _ in range(3):
            status, _, body = self.get("/c?size=10&close=1")
            self.assertEqual((status, body), (200, pattern(10)))


if __name__ == "__main__":
    unittest.main()
