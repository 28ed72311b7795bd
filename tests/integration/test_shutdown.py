"""SIGTERM drains: /ready turns 503, in-flight requests finish, then exit 0. SIGINT stops."""
import signal
import threading
import time
import unittest

from harness import Bulwark, MINIMAL, Reader, Testd, connect, request, wait_for

TEMPLATE = MINIMAL.replace("access_log:", "drain: {{ timeout: 5s }}\naccess_log:")

# Two workers and a fast health check that flips with one probe: a worker with nothing to
# drain ends at once while the other still serves, and health changes keep coming.
TWO_WORKERS_HEALTH = """
admin: {{ listen: 127.0.0.1:{admin} }}
workers: 2
drain: {{ timeout: 10s }}
access_log: {{ path: "off" }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app, timeout: 30s }}
upstreams:
  - name: app
    endpoints: [{upstream}]
    health_check: {{ path: /healthz, interval: 100ms, timeout: 1s, jitter: 0%,
                    healthy_threshold: 1, unhealthy_threshold: 1 }}
"""


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

    def test_drain_with_two_workers_survives_health_changes(self):
        # Regression: the worker with no connections ended its loop at once; the next health
        # change was sent to its closed loop and libuv aborted (exit 134), dropping the
        # request the drain was meant to finish.
        proxy = Bulwark(TWO_WORKERS_HEALTH, upstream=self.backend.address)
        wait_for(lambda: proxy.metric("bulwark_endpoint_healthy", upstream="app") == 1,
                 what="the endpoint healthy")
        result = {}

        def slow():
            result["response"] = request(proxy.port, "GET", "/slow?delay=1500&size=100")

        t = threading.Thread(target=slow)
        t.start()
        in_flight(proxy)
        proxy.signal(signal.SIGTERM)
        wait_for(lambda: request(proxy.admin_port, "GET", "/ready")[0] == 503, what="/ready 503")
        time.sleep(0.2)  # the idle worker has ended by now
        for status in (500, 200, 500, 200, 500):  # several changes, each sent to every worker
            request(self.backend.port, "GET", "/__health?status=%d" % status)
            time.sleep(0.15)
        t.join(10)
        self.assertIn("response", result, proxy.stderr_text())
        status, _, body = result["response"]
        self.assertEqual((status, len(body)), (200, 100))
        self.assertEqual(proxy.wait(10), 0, proxy.stderr_text())
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

    def test_drain_delay_keeps_serving_with_ready_503(self):
        # Kubernetes timing: /ready turns 503 at once so the endpoint leaves its Services,
        # but listeners keep accepting and answering until drain.delay has passed.
        template = MINIMAL.replace("access_log:", "drain: {{ delay: 1500ms, timeout: 5s }}\naccess_log:")
        proxy = Bulwark(template, upstream=self.backend.address)
        keep = connect(proxy.port)  # a keep-alive connection opened before the SIGTERM
        keep.sendall(b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(keep)
        self.assertEqual(reader.read_response()[0], 200)
        signal_at = time.time()
        proxy.signal(signal.SIGTERM)
        wait_for(lambda: request(proxy.admin_port, "GET", "/ready")[0] == 503, what="/ready 503")
        self.assertLess(time.time() - signal_at, 1.0)
        # During the delay: new connections are accepted and served, and so are new requests
        # on a connection that was open before.
        served = 0
        while time.time() - signal_at < 1.0:
            self.assertEqual(request(proxy.port, "GET", "/during")[0], 200)
            keep.sendall(b"GET /during HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(reader.read_response()[0], 200)
            served += 1
            time.sleep(0.05)
        self.assertGreater(served, 3)
        self.assertIn("drain.delay", proxy.stderr_text())
        # After the delay: listeners close, the idle keep-alive connection is closed, exit 0.
        self.assertEqual(proxy.wait(timeout=10), 0)
        self.assertGreaterEqual(time.time() - signal_at, 1.4)
        keep.settimeout(3)
        self.assertEqual(keep.recv(1), b"")
        with self.assertRaises(OSError):
            request(proxy.port, "GET", "/after", timeout=1)
        keep.close()
        proxy.stop()

    def test_second_sigterm_skips_the_delay(self):
        template = MINIMAL.replace("access_log:", "drain: {{ delay: 30s, timeout: 5s }}\naccess_log:")
        proxy = Bulwark(template, upstream=self.backend.address)
        proxy.signal(signal.SIGTERM)
        wait_for(lambda: request(proxy.admin_port, "GET", "/ready")[0] == 503, what="/ready 503")
        self.assertEqual(request(proxy.port, "GET", "/still")[0], 200)
        start = time.time()
        proxy.signal(signal.SIGTERM)
        self.assertEqual(proxy.wait(timeout=10), 0)
        self.assertLess(time.time() - start, 5)
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
