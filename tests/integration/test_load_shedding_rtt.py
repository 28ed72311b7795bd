"""The round trip the load shedder learns from is the backend's, not the client's: a client
that reads a large response slowly, or uploads its body slowly, must not make the backend look
slow (which would lower the limit and shed other clients' requests). /status reports the RTT
window the algorithm saw (published when the next sample comes after a 1 s window)."""
import json
import socket
import time
import unittest

from harness import Reader, Testd, connect, request
from test_load_shedding import start


def rtt_avg_ms(proxy):
    _, _, body = request(proxy.admin_port, "GET", "/status")
    return json.loads(body)["upstreams"][0]["load_shedding"]["rtt_us"]["avg"] / 1000.0


class ShedderRtt(unittest.TestCase):
    def setUp(self):
        self.backend = Testd()
        self.proxy = start(self.backend, limit=10, queue=10)

    def tearDown(self):
        self.proxy.stop()
        self.backend.stop()

    def publish_window(self):
        # The window of the sample above closes with the first sample after it.
        time.sleep(1.1)
        self.assertEqual(request(self.proxy.port, "GET", "/quick")[0], 200)

    def test_a_client_that_reads_slowly_is_not_the_backends_latency(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # fills at once
        s.connect(("127.0.0.1", self.proxy.port))
        size = 16 * 1024 * 1024  # far more than the socket buffers on the way hold
        s.sendall(b"GET /big?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
        time.sleep(1.5)  # the backend has sent what it could long ago; the client reads nothing
        status, _, body = Reader(s).read_response()
        self.assertEqual((status, len(body)), (200, size))
        s.close()
        self.publish_window()
        # The response stayed unread for 1.5 s; the backend answered at once.
        self.assertLess(rtt_avg_ms(self.proxy), 700)

    def test_a_client_that_uploads_slowly_is_not_the_backends_latency(self):
        s = connect(self.proxy.port)
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        for _ in range(10):  # one byte every 150 ms: 1.5 s for the body
            time.sleep(0.15)
            s.sendall(b"x")
        status, h, _ = Reader(s).read_response()
        self.assertEqual((status, h.get("x-testd-body-bytes")), (200, "10"))
        s.close()
        self.publish_window()
        self.assertLess(rtt_avg_ms(self.proxy), 700)


if __name__ == "__main__":
    unittest.main()
