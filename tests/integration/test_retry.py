"""Retries: transient failures recovered on another endpoint, never once the response has
started, never for non-idempotent methods or bodies too big to replay, always inside the
route timeout and the retry budget."""
import json
import time
import unittest

from harness import Bulwark, Reader, Testd, connect, crc_hex, free_port, pattern, request

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - name: all
        match: {{ prefix: / }}
        upstream: app
        timeout: {timeout}
        retry:
          attempts: 3
          on: [connect-failure, reset, gateway-error, timeout]
          per_try_timeout: {per_try}
          backoff: {{ base: 5ms, max: 20ms }}
          budget: {{ ratio: 20%, min_per_second: 10 }}
          max_body_bytes: 64KiB
upstreams:
  - name: app
    endpoints: [{endpoints}]
    balance: round_robin
"""


class Retries(unittest.TestCase):
    def start(self, endpoints, timeout="2s", per_try="1s"):
        self.proxy = Bulwark(TEMPLATE, endpoints=", ".join(endpoints), timeout=timeout, per_try=per_try)

    def tearDown(self):
        self.proxy.stop()
        for b in getattr(self, "backends", []):
            b.stop()

    def test_connection_refused_then_success(self):
        self.backends = [Testd(name="live")]
        dead = "127.0.0.1:%d" % free_port()
        self.start([dead, self.backends[0].address])
        for _ in range(4):  # round robin puts every other first attempt on the dead one
            status, h, _ = request(self.proxy.port, "GET", "/x")
            self.assertEqual(status, 200)
            self.assertEqual(h["x-testd-name"], "live")
        attempts = [e["attempts"] for e in self.proxy.access_log(until=lambda es: any(e["attempts"] == 2 for e in es))]
        self.assertIn(2, attempts)
        self.assertGreaterEqual(self.proxy.metric("bulwark_retries_total", route="all", reason="connect-failure"), 1)

    def test_reset_before_headers_is_retried_and_reported(self):
        self.backends = [Testd(name="bad"), Testd(name="good")]
        request(self.backends[0].port, "GET", "/__mode?reset=before")
        self.start([b.address for b in self.backends])
        for _ in range(4):
            status, h, _ = request(self.proxy.port, "GET", "/x")
            self.assertEqual((status, h["x-testd-name"]), (200, "good"))
        status, h, _ = request(self.proxy.port, "GET", "/x")
        # The requests whose first attempt hit the bad endpoint say so.
        self.assertIn(2, [e["attempts"] for e in self.proxy.access_log(until=lambda es: any(e["attempts"] == 2 for e in es))])
        self.assertGreaterEqual(self.proxy.metric("bulwark_retries_total", route="all", reason="reset"), 1)

    def test_reset_after_headers_is_not_retried(self):
        self.backends = [Testd(name="a"), Testd(name="b")]
        self.start([b.address for b in self.backends])
        s = connect(self.proxy.port)
        s.sendall(b"GET /r?reset=after&size=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = Reader(s)
        _, status, headers = r.read_head()
        self.assertEqual(status, 200)
        self.assertNotIn("x-bulwark-attempts", dict(headers))
        with self.assertRaises((EOFError, ConnectionResetError)):
            r.read_exact(int(dict(headers)["content-length"]))
        s.close()
        total = sum(b.stats()["requests"] for b in self.backends) - 2  # minus the two /__stats
        self.assertEqual(total, 1)

    def test_post_with_503_is_not_retried(self):
        self.backends = [Testd(name="a"), Testd(name="b")]
        self.start([b.address for b in self.backends])
        status, h, _ = request(self.proxy.port, "POST", "/p?status=503", body=b"x")
        self.assertEqual(status, 503)
        self.assertNotIn("x-bulwark-attempts", h)
        self.assertEqual(sum(b.stats()["requests"] for b in self.backends) - 2, 1)

    def test_put_body_replayed_byte_exact(self):
        self.backends = [Testd(name="sick"), Testd(name="well")]
        request(self.backends[0].port, "GET", "/__mode?status=503")
        self.start([b.address for b in self.backends])
        body = pattern(10 * 1024)
        for chunked in (False, True):
            for _ in range(2):  # one of the two lands first on the sick endpoint
                headers = {"Transfer-Encoding": "chunked"} if chunked else {}
                payload = body
                if chunked:
                    payload = b"".join(b"%x\r\n" % len(body[i:i + 3000]) + body[i:i + 3000] + b"\r\n"
                                       for i in range(0, len(body), 3000)) + b"0\r\n\r\n"
                status, h, _ = request(self.proxy.port, "PUT", "/u", headers=headers, body=payload)
                self.assertEqual((status, h["x-testd-name"]), (200, "well"))
                self.assertEqual(h["x-testd-body-crc32"], crc_hex(body))
                self.assertEqual(int(h["x-testd-body-bytes"]), len(body))
        self.assertIn("2", [str(e["attempts"]) for e in self.proxy.access_log(
            until=lambda es: any(str(e["attempts"]) == "2" for e in es))])

    def test_one_mebibyte_body_is_not_replayed(self):
        self.backends = [Testd(name="sick"), Testd(name="well")]
        request(self.backends[0].port, "GET", "/__mode?status=503")
        self.start([b.address for b in self.backends])
        statuses = [request(self.proxy.port, "PUT", "/big", body=pattern(1 << 20))[0] for _ in range(2)]
        self.assertEqual(sorted(statuses), [200, 503])  # the one on the sick endpoint is returned

    def test_per_try_timeout_moves_on_to_the_next_endpoint(self):
        self.backends = [Testd(name="hang"), Testd(name="fine")]
        request(self.backends[0].port, "GET", "/__mode?delay=5000")
        self.start([b.address for b in self.backends], timeout="2s", per_try="200ms")
        for _ in range(2):
            start = time.time()
            status, h, _ = request(self.proxy.port, "GET", "/t")
            elapsed = time.time() - start
            self.assertEqual((status, h["x-testd-name"]), (200, "fine"))
            self.assertLess(elapsed, 1.0)
        self.assertGreaterEqual(self.proxy.metric("bulwark_retries_total", route="all", reason="timeout"), 1)

    def test_retries_never_outlive_the_route_timeout(self):
        self.backends = [Testd(name="a"), Testd(name="b")]
        for b in self.backends:
            request(b.port, "GET", "/__mode?delay=5000")
        self.start([b.address for b in self.backends], timeout="500ms", per_try="300ms")
        start = time.time()
        status, h, _ = request(self.proxy.port, "GET", "/t")
        elapsed = time.time() - start
        self.assertEqual(status, 504)
        self.assertEqual(h["x-bulwark-reason"], "upstream-timeout")
        self.assertLess(elapsed, 1.0)
        self.assertEqual(h.get("x-bulwark-attempts"), "2")  # the second try was cut to 200 ms

    def test_retry_after_longer_than_time_left_is_not_retried(self):
        self.backends = [Testd(name="a"), Testd(name="b")]
        self.start([b.address for b in self.backends], timeout="1s")
        status, h, _ = request(self.proxy.port, "GET", "/ra?status=503&retry_after=5")
        self.assertEqual((status, h.get("retry-after")), (503, "5"))  # passed on as it came
        self.assertNotIn("x-bulwark-attempts", h)
        status, h, _ = request(self.proxy.port, "GET", "/ra?status=503&retry_after=0")
        self.assertEqual(h.get("x-bulwark-attempts"), "3")  # a short one is retried
        self.assertEqual(sum(b.stats()["requests"] for b in self.backends) - 2, 4)

    def test_retry_after_without_a_route_timeout_is_capped_by_backoff_max(self):
        # No route timeout: a Retry-After longer than backoff.max (20ms here) is passed on at
        # once instead of holding the client for as long as the server asked (up to years).
        self.backends = [Testd(name="a"), Testd(name="b")]
        self.start([b.address for b in self.backends], timeout="0")
        start = time.time()
        status, h, _ = request(self.proxy.port, "GET", "/ra?status=503&retry_after=5")
        self.assertLess(time.time() - start, 1.0)
        self.assertEqual((status, h.get("retry-after")), (503, "5"))
        self.assertNotIn("x-bulwark-attempts", h)
        status, h, _ = request(self.proxy.port, "GET", "/ra?status=503&retry_after=0")
        self.assertEqual(h.get("x-bulwark-attempts"), "3")

    def test_full_outage_stays_within_the_budget(self):
        self.backends = [Testd(name="a"), Testd(name="b")]
        for b in self.backends:
            request(b.port, "GET", "/__mode?status=503")
        self.start([b.address for b in self.backends], timeout="2s")
        requests = 0
        start = time.time()
        # 200 requests/s for 9.5 s: inside one budget window (10 s), where the bound is exact;
        # across windows the floor of the window that slid out comes on top (resilience.md).
        while time.time() - start < 9.5:
            target = start + requests * 0.005  # 200 requests per second
            now = time.time()
            if now < target:
                time.sleep(target - now)
            status, _, _ = request(self.proxy.port, "GET", "/o")
            self.assertEqual(status, 503)
            requests += 1
        elapsed = time.time() - start
        attempts = sum(b.stats()["requests"] - 1 for b in self.backends)  # minus /__mode
        attempts -= 2  # the /__stats calls themselves are counted too
        bound = 1.2 * requests + 10 * elapsed
        print("full outage: %d requests, %d upstream attempts, bound %.0f" % (requests, attempts, bound))
        self.assertLessEqual(attempts, bound + 1)  # +1: the proxy reads a coarse monotonic clock
        self.assertGreater(attempts, requests)  # some retries were allowed
        self.assertGreater(self.proxy.metric("bulwark_retry_budget_exhausted_total", route="all"), 0)


if __name__ == "__main__":
    unittest.main()
