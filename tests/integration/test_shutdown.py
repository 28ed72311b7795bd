"""SIGTERM drains: /ready turns 503, in-flight requests finish, then exit 0. SIGINT stops."""
import signal
import threading
import time
import unittest

from harness import Bulwark, MINIMAL, Reader, Testd, connect, request, wait_for

TEMPLATE = MINIMAL.replace("access_log:", "drain: {{ timeout: 5s }}\naccess_log:")


def in_flight(proxy, n=1):
    """Waits until `n` requests are in flight to the upstream."""
    wait_for(lambda: proxy.metric("bulwark_inflight_requests", upstream="app") == n,
             what="%d request(s) in flight" % n)


class Shutdown(unittest.TestCase):
    def setUp(self):
        self.backend = Testd()

    def tearDown(self):
        self.backend.stop()

    def test_sigterm_lets_a_slow_request_finish(self):
        proxy = Bulwark(TEMPLATE, upstream=self.backend.address)
        idle = connect(proxy.port)  # an idle keep-alive connection: closed by the drain
        idle.sendall(b"GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(Reader(idle).read_response()[0], 200)
        result = {}

        def slow():
            result["response"] = request(proxy.port, "GET", "/slow?delay=1000&size=100")

        t = threading.Thread(target=slow)
        t.start()
        in_flight(proxy)  # SIGTERM only once the slow request is under way
        proxy.signal(signal.SIGTERM)
        wait_for(lambda: request(proxy.admin_port, "GET", "/ready")[0] == 503, what="/ready 503")
        idle.settimeout(3)
        self.assertEqual(idle.recv(1), b"")
        idle.close()
        with self.assertRaises(ConnectionRefusedError):  # the listener is closed
            connect(proxy.port, timeout=1)
        t.join(10)
        status, _, body = result["response"]
        self.assertEqual((status, len(body)), (200, 100))
        self.assertEqual(proxy.wait(10), 0)
        proxy.stop()

    def test_drain_timeout_bounds_the_wait(self):
        proxy = Bulwark(MINIMAL.replace("access_log:", "drain: {{ timeout: 500ms }}\naccess_log:"),
                        upstream=self.backend.address)
        s = connect(proxy.port)
        s.sendall(b"GET /hang?delay=10000 HTTP/1.1\r\nHost: x\r\n\r\n")
        in_flight(proxy)
        start = time.time()
        proxy.signal(signal.SIGTERM)
        self.assertEqual(proxy.wait(10), 0)
        self.assertLess(time.time() - start, 3)
        s.close()
        proxy.stop()

    def test_sigint_stops_at_once(self):
        proxy = Bulwark(TEMPLATE, upstream=self.backend.address)
        s = connect(proxy.port)
        s.sendall(b"GET /hang?delay=10000 HTTP/1.1\r\nHost: x\r\n\r\n")
        in_flight(proxy)
        start = time.time()
        proxy.signal(signal.SIGINT)
        self.assertEqual(proxy.wait(10), 0)
        self.assertLess(time.time() - start, 1)
        s.close()
        proxy.stop()


if __name__ == "__main__":
    unittest.main()
