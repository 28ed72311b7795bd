"""The upstream bulkhead: max_requests in flight, then up to max_pending wait for at most
pending_timeout, then 503 pending-overflow."""
import threading
import time
import unittest

from harness import Bulwark, Testd, crc_hex, pattern, request, wait_for

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
workers: {workers}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - name: all
        match: {{ prefix: / }}
        upstream: app
        timeout: 10s
upstreams:
  - name: app
    endpoints: [{upstream}]
    limits: {{ max_requests: {max_requests}, max_pending: {max_pending}, pending_timeout: {pending_timeout} }}
"""


def concurrently(port, paths, stagger=0.0, **kw):
    results = [None] * len(paths)

    def one(i, path):
        start = time.time()
        status, h, body = request(port, kw.get("method", "GET"), path, body=kw.get("body", b""))
        results[i] = (status, h, body, time.time() - start)

    threads = []
    for i, p in enumerate(paths):
        t = threading.Thread(target=one, args=(i, p))
        t.start()
        threads.append(t)
        time.sleep(stagger)
    for t in threads:
        t.join(30)
    return results


class Bulkhead(unittest.TestCase):
    def setUp(self):
        self.backend = Testd()

    def tearDown(self):
        self.proxy.stop()
        self.backend.stop()

    def test_overflow_and_pending_timeout(self):
        self.proxy = Bulwark(TEMPLATE, upstream=self.backend.address, workers=1, max_requests=2,
                             max_pending=2, pending_timeout="600ms")
        results = concurrently(self.proxy.port, ["/slow?delay=2000"] * 6, stagger=0.03)
        ok = [r for r in results if r[0] == 200]
        overflow = [r for r in results if r[0] == 503]
        self.assertEqual(len(ok), 2)
        self.assertEqual(len(overflow), 4)
        for r in overflow:
            self.assertEqual(r[1]["x-bulwark-reason"], "pending-overflow")
        waits = sorted(r[3] for r in overflow)
        # Two were refused at once (the queue was full), two waited pending_timeout.
        self.assertLess(waits[1], 0.4)
        self.assertGreater(waits[2], 0.5)
        self.assertLess(waits[3], 1.4)
        self.assertEqual(self.proxy.metric_eventually(4, "bulwark_local_replies_total", reason="pending-overflow"), 4)
        self.assertEqual(self.proxy.metric_eventually(0, "bulwark_inflight_requests", upstream="app"), 0)
        self.assertEqual(self.proxy.metric("bulwark_pending_requests", upstream="app"), 0)

    def test_queued_requests_are_served_in_turn_with_their_bodies(self):
        self.proxy = Bulwark(TEMPLATE, upstream=self.backend.address, workers=1, max_requests=1,
                             max_pending=10, pending_timeout="5s")
        body = pattern(100000)
        start = time.time()
        results = concurrently(self.proxy.port, ["/q?delay=200"] * 4, stagger=0.02, method="PUT",
                               body=body)
        elapsed = time.time() - start
        for status, h, _, _ in results:
            self.assertEqual(status, 200)
            self.assertEqual(h["x-testd-body-crc32"], crc_hex(body))
        # One at a time: about 4 x 200 ms.
        self.assertGreater(elapsed, 0.75)

    def test_pending_gauge_while_waiting(self):
        self.proxy = Bulwark(TEMPLATE, upstream=self.backend.address, workers=1, max_requests=1,
                             max_pending=10, pending_timeout="5s")
        t = threading.Thread(target=concurrently, args=(self.proxy.port, ["/g?delay=600"] * 3, 0.02))
        t.start()
        gauges = lambda: (self.proxy.metric("bulwark_inflight_requests", upstream="app"),
                          self.proxy.metric("bulwark_pending_requests", upstream="app"))
        wait_for(lambda: gauges() == (1, 2), timeout=3, what="1 in flight and 2 pending")
        t.join(10)
        wait_for(lambda: gauges() == (0, 0), what="the gauges back at 0")

    def test_limit_holds_across_workers(self):
        self.proxy = Bulwark(TEMPLATE, upstream=self.backend.address, workers=4, max_requests=2,
                             max_pending=0, pending_timeout="1s")
        results = concurrently(self.proxy.port, ["/w?delay=1000"] * 8, stagger=0.01)
        self.assertEqual(sorted(r[0] for r in results), [200, 200] + [503] * 6)


if __name__ == "__main__":
    unittest.main()
