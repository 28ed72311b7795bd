"""Expect: 100-continue, and Upgrade (WebSocket) tunnelled as bytes after 101."""
import base64
import hashlib
import os
import socket
import struct
import threading
import time
import unittest

from harness import MINIMAL, Bulwark, ProxyTest, Reader, connect, crc_hex, wait_for


def ws_frame(payload, opcode=1):
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_ws_frame(reader):
    b0, b1 = reader.read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack(">H", reader.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", reader.read_exact(8))[0]
    return b0 & 0x0F, reader.read_exact(n)


class ExpectAndUpgrade(ProxyTest):
    def test_100_continue(self):
        s = connect(self.proxy.port)
        s.sendall(b"PUT /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        r = Reader(s)
        line = r.read_until(b"\r\n\r\n")
        self.assertTrue(line.startswith(b"HTTP/1.1 100 Continue"), line)
        s.sendall(b"hello")
        status, h, _ = r.read_response()
        self.assertEqual(status, 200)
        self.assertEqual(h["x-testd-body-crc32"], crc_hex(b"hello"))
        s.close()

    def test_unknown_expectation_is_refused(self):
        s = connect(self.proxy.port)
        s.sendall(b"GET /e HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n")
        status, h, _ = Reader(s).read_response()
        self.assertEqual(status, 417)
        self.assertEqual(h["x-bulwark-reason"], "bad-request")
        s.close()

    def test_websocket_echo_through_the_tunnel(self):
        s = connect(self.proxy.port)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n" % key).encode())
        r = Reader(s)
        version, status, headers = r.read_head()
        h = dict(headers)
        self.assertEqual(status, 101)
        self.assertEqual(h["upgrade"].lower(), "websocket")
        self.assertEqual(h["connection"].lower(), "upgrade")
        expect = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.assertEqual(h["sec-websocket-accept"], expect)
        for payload in (b"hello", b"x" * 300, os.urandom(70000)):
            s.sendall(ws_frame(payload, opcode=2))
            opcode, echoed = read_ws_frame(r)
            self.assertEqual((opcode, echoed), (2, payload))
        s.sendall(ws_frame(b"", opcode=8))
        opcode, _ = read_ws_frame(r)
        self.assertEqual(opcode, 8)
        s.settimeout(5)
        self.assertEqual(r.read_to_eof(), b"")  # the backend closed: the tunnel closes too
        s.close()


class RawBackend:
    """A backend on a raw socket: answers the first request head it reads with `answer` and
    records every byte it receives."""

    def __init__(self, answer):
        self.answer = answer
        self.received = b""
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.address = "127.0.0.1:%d" % self.server.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        conn.settimeout(5)
        answered = False
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                self.received += data
                if not answered and b"\r\n\r\n" in self.received:
                    answered = True
                    conn.sendall(self.answer)
        except OSError:
            pass
        conn.close()

    def stop(self):
        self.server.close()


UPGRADE_THEN_MORE = (b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n"
                     b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")


class UpgradeHeldUntilSwitched(unittest.TestCase):
    """Bytes after an upgrade request reach the upstream only once it has answered 101: one
    that refuses the upgrade must not read them as a request Bulwark never checked."""

    def run_case(self, answer):
        backend = RawBackend(answer)
        self.addCleanup(backend.stop)
        proxy = Bulwark(MINIMAL, upstream=backend.address)
        self.addCleanup(proxy.stop)
        s = connect(proxy.port)
        self.addCleanup(s.close)
        s.sendall(UPGRADE_THEN_MORE)
        return backend, Reader(s)

    def test_refused_upgrade_does_not_forward_what_follows(self):
        backend, r = self.run_case(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        status, _, body = r.read_response()
        self.assertEqual((status, body), (200, b"ok"))
        self.assertEqual(r.read_to_eof(), b"")  # closed after the refusal: nothing else served
        time.sleep(0.2)
        self.assertIn(b"GET /up ", backend.received)
        self.assertNotIn(b"/smuggled", backend.received)

    def test_upgrade_without_a_protocol_ends_the_connection(self):
        # llhttp flags the request as an upgrade (Connection: Upgrade and an Upgrade field),
        # but the last Upgrade value is empty: Bulwark forwards a plain request, and parses
        # nothing after it (found by fuzz_request: the parser stays stopped after an upgrade).
        backend = RawBackend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.addCleanup(backend.stop)
        proxy = Bulwark(MINIMAL, upstream=backend.address)
        self.addCleanup(proxy.stop)
        s = connect(proxy.port)
        self.addCleanup(s.close)
        s.sendall(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
                  b"Upgrade:\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        r = Reader(s)
        status, _, body = r.read_response()
        self.assertEqual((status, body), (200, b"ok"))
        self.assertEqual(r.read_to_eof(), b"")
        time.sleep(0.2)
        self.assertNotIn(b"/smuggled", backend.received)
        self.assertNotIn(b"Upgrade", backend.received)
        self.assertEqual(proxy.proc.poll(), None)

    def test_accepted_upgrade_forwards_what_follows(self):
        backend, r = self.run_case(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                                   b"Upgrade: foo\r\n\r\n")
        version, status, headers = r.read_head()
        self.assertEqual(status, 101)
        wait_for(lambda: b"/smuggled" in backend.received,
                 what="the bytes after the upgrade request, tunnelled after the 101")
        head_end = backend.received.index(b"\r\n\r\n") + 4
        self.assertEqual(backend.received[head_end:], b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")


if __name__ == "__main__":
    unittest.main()
