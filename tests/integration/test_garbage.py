"""Malformed and hostile input: random bytes and mutated requests never crash or wedge the
proxy (run under ASan/UBSan in CI), and it keeps serving well-formed requests."""
import random
import socket
import unittest

from harness import ProxyTest, request

VALID = [
    b"GET /a?size=10 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
]


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randint(0, 3)
        pos = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[pos] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and data:
            del data[pos:pos + rng.randint(1, 8)]
        else:
            data[pos:pos] = rng.choice([b"\r\n", b"\n", b":", b" ", b"0", b"\x00", b"Content-Length: 9\r\n"])
    return bytes(data)


class Garbage(ProxyTest):
    def test_random_and_mutated_input(self):
        rng = random.Random(20261122)
        answers = {}
        for i in range(400):
            if i % 4 == 0:
                payload = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
            else:
                payload = mutate(rng, rng.choice(VALID) * rng.randint(1, 3))
            s = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                first = received = s.recv(65536)
                while received:
                    received = s.recv(65536)
                status = first[9:12].decode("latin-1") if first.startswith(b"HTTP/1.") else "none"
                answers[status] = answers.get(status, 0) + 1
            except OSError:
                pass  # a reset is an acceptable answer to garbage
            finally:
                s.close()
        self.assertIsNone(self.proxy.proc.poll(), "the proxy died")
        self.assertGreater(answers.get("400", 0), 100, answers)  # refused as malformed
        self.assertGreater(answers.get("200", 0), 10, answers)   # mutations that stayed valid
        self.assertEqual(request(self.proxy.port, "GET", "/ok")[0], 200)
        self.assertEqual(self.proxy.metric_eventually(0, "bulwark_downstream_connections", listener="inbound"), 0)


if __name__ == "__main__":
    unittest.main()
