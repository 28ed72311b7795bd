"""50 MiB bodies stream through both ways, byte-exact, without the proxy buffering them."""
import threading
import time
import unittest
import zlib

import sys

from harness import SANITIZED, Bulwark, Reader, Testd, connect, crc_hex, pattern

SIZE = 50 * 1024 * 1024
RSS_LIMIT_KIB = 64 * 1024

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    limits: {{ max_body_bytes: 100MiB }}
    routes:
      - name: all
        match: {{ prefix: / }}
        upstream: app
        timeout: 60s
upstreams:
  - name: app
    endpoints: [{upstream}]
"""


class RssSampler(threading.Thread):
    def __init__(self, proxy):
        super().__init__(daemon=True)
        self.proxy = proxy
        self.peak = 0
        self.running = True

    def run(self):
        while self.running:
            self.peak = max(self.peak, self.proxy.rss_kib())
            time.sleep(0.02)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.join()


class LargeBodies(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.backend = Testd()
        cls.proxy = Bulwark(TEMPLATE, upstream=cls.backend.address)
        block = pattern(251 * 4096)
        cls.body = (block * (SIZE // len(block) + 1))[:SIZE]
        cls.crc = crc_hex(cls.body)

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        cls.backend.stop()

    def assertRssBounded(self, peak):
        print("proxy RSS peak while streaming 50 MiB: %d KiB" % peak, file=sys.stderr)
        if not SANITIZED:
            self.assertLess(peak, RSS_LIMIT_KIB, "proxy RSS peaked at %d KiB" % peak)

    def upload(self, method, framing):
        s = connect(self.proxy.port, timeout=60)
        head = "%s /up HTTP/1.1\r\nHost: x\r\n" % method
        if framing == "chunked":
            s.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
            step = 256 * 1024
            for i in range(0, SIZE, step):
                piece = self.body[i:i + step]
                s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        else:
            s.sendall((head + "Content-Length: %d\r\n\r\n" % SIZE).encode())
            s.sendall(self.body)
        status, h, _ = Reader(s).read_response()
        s.close()
        return status, h

    def test_upload_content_length_and_chunked(self):
        for method in ("POST", "PUT"):
            for framing in ("length", "chunked"):
                with self.subTest(method=method, framing=framing), RssSampler(self.proxy) as rss:
                    status, h = self.upload(method, framing)
                    self.assertEqual(status, 200)
                    self.assertEqual(int(h["x-testd-body-bytes"]), SIZE)
                    self.assertEqual(h["x-testd-body-crc32"], self.crc)
                self.assertRssBounded(rss.peak)

    def test_download_content_length_and_chunked(self):
        for chunked_reply in ("0", "1"):
            with self.subTest(chunked=chunked_reply), RssSampler(self.proxy) as rss:
                s = connect(self.proxy.port, timeout=60)
                s.sendall(("GET /down?size=%d&chunked=%s HTTP/1.1\r\nHost: x\r\n\r\n"
                           % (SIZE, chunked_reply)).encode())
                crc = [0, 0]

                def sink(data):
                    crc[0] = zlib.crc32(data, crc[0])
                    crc[1] += len(data)
                    time.sleep(0.0005)  # a slower reader: backpressure must hold the upstream

                status, h, _ = Reader(s).read_response(sink=sink)
                s.close()
                self.assertEqual(status, 200)
                self.assertEqual(crc[1], SIZE)
                self.assertEqual("%08x" % (crc[0] & 0xFFFFFFFF), h["x-testd-crc32"])
            self.assertRssBounded(rss.peak)

    def test_echo_streams_both_ways_at_once(self):
        s = connect(self.proxy.port, timeout=60)
        s.sendall(("PUT /echo?echo=1 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % SIZE).encode())
        result = {}

        def read():
            crc = 0
            n = 0
            r = Reader(s)

            def sink(data):
                nonlocal crc, n
                crc = zlib.crc32(data, crc)
                n += len(data)
            status, _, _ = r.read_response(sink=sink)
            result.update(status=status, crc="%08x" % (crc & 0xFFFFFFFF), n=n)

        t = threading.Thread(target=read)
        t.start()
        s.sendall(self.body)
        t.join(60)
        s.close()
        self.assertEqual(result, {"status": 200, "crc": self.crc, "n": SIZE})


if __name__ == "__main__":
    unittest.main()
