"""Local token-bucket rate limits: the quota holds, keys are independent, the standard
headers are present and consistent, and shadow mode never rejects."""
import re
import socket
import time
import unittest

from harness import Bulwark, Reader, Testd, problem

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - name: counted
        match: {{ prefix: /counted }}
        upstream: app
        rate_limit: {{ rate: 10/m, burst: 10, key: {key} }}
      - name: limited
        match: {{ prefix: /limited }}
        upstream: app
        rate_limit: {{ rate: 50/s, burst: 10, key: {key}, enforce: {enforce} }}
      - name: open
        match: {{ prefix: / }}
        upstream: app
upstreams:
  - name: app
    endpoints: [{upstream}]
"""


class Client:
    def __init__(self, port, source="127.0.0.1", headers=""):
        self.sock = socket.socket()
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = Reader(self.sock)
        self.headers = headers

    def get(self, path="/limited"):
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, self.headers)).encode())
        return self.reader.read_response()

    def close(self):
        self.sock.close()


class LocalRateLimit(unittest.TestCase):
    def start(self, key="client_ip", enforce="true"):
        self.backend = Testd()
        self.proxy = Bulwark(TEMPLATE, upstream=self.backend.address, key=key, enforce=enforce)

    def tearDown(self):
        self.proxy.stop()
        self.backend.stop()

    def test_quota_over_three_seconds(self):
        self.start()
        c = Client(self.proxy.port)
        ok = limited = 0
        start = time.time()
        while time.time() - start < 3.0:
            status, _, _ = c.get()
            ok += status == 200
            limited += status == 429
            time.sleep(0.002)
        c.close()
        print("50/s burst 10 for 3 s: %d admitted, %d limited" % (ok, limited))
        self.assertGreaterEqual(ok, 152)
        self.assertLessEqual(ok, 168)
        self.assertGreater(limited, 100)
        self.assertEqual(self.proxy.metric_eventually(ok, "bulwark_ratelimit_decisions_total", route="limited",
                                                      scope="local", decision="allowed"), ok)

    def test_headers(self):
        self.start()
        c = Client(self.proxy.port)
        remaining = []
        for _ in range(10):
            status, h, _ = c.get("/counted")  # a token every 6 s: none comes back meanwhile
            self.assertEqual(status, 200)
            m = re.fullmatch(r'"default";r=(\d+);t=(\d+)', h["ratelimit"])
            self.assertIsNotNone(m, h["ratelimit"])
            remaining.append(int(m.group(1)))
        self.assertEqual(remaining, list(range(9, -1, -1)))
        status, h, body = c.get("/counted")
        self.assertEqual(status, 429)
        self.assertEqual(h["x-bulwark-reason"], "rate-limited")
        self.assertEqual(h["ratelimit-policy"], '"default";q=10;w=60')
        self.assertRegex(h["ratelimit"], r'^"default";r=0;t=\d+$')
        self.assertIn(h["retry-after"], ("5", "6"))  # the next token, 6 s after the first
        self.assertEqual(problem(body)["status"], 429)
        # The unlimited route carries no RateLimit header.
        status, h, _ = c.get("/other")
        self.assertNotIn("ratelimit", h)
        c.close()

    def test_clients_by_ip_are_independent(self):
        self.start()
        a, b = Client(self.proxy.port, "127.0.0.1"), Client(self.proxy.port, "127.0.0.2")
        a_ok = sum(a.get()[0] == 200 for _ in range(20))
        b_ok = sum(b.get()[0] == 200 for _ in range(20))
        self.assertGreaterEqual(a_ok, 10)
        self.assertGreaterEqual(b_ok, 10)
        self.assertLess(a_ok, 20)
        a.close()
        b.close()

    def test_clients_by_header_are_independent(self):
        self.start(key="header:x-tenant")
        a = Client(self.proxy.port, headers="X-Tenant: a\r\n")
        b = Client(self.proxy.port, headers="X-Tenant: b\r\n")
        anon1, anon2 = Client(self.proxy.port), Client(self.proxy.port)
        # The route "counted" (10/m, burst 10) refills a token every 6 s: a slow machine cannot
        # refill a bucket between the requests below.
        self.assertEqual(sum(a.get("/counted")[0] == 200 for _ in range(10)), 10)
        self.assertEqual(sum(b.get("/counted")[0] == 200 for _ in range(10)), 10)
        self.assertEqual(a.get("/counted")[0], 429)
        # Requests without the header share one anonymous bucket.
        shared = (sum(anon1.get("/counted")[0] == 200 for _ in range(6)) +
                  sum(anon2.get("/counted")[0] == 200 for _ in range(6)))
        self.assertEqual(shared, 10)
        for c in (a, b, anon1, anon2):
            c.close()

    def test_shadow_mode_counts_but_never_rejects(self):
        self.start(enforce="false")
        c = Client(self.proxy.port)
        statuses = [c.get()[0] for _ in range(40)]
        c.close()
        self.assertEqual(set(statuses), {200})
        self.assertGreater(self.proxy.metric("bulwark_ratelimit_decisions_total", route="limited",
                                             decision="limited"), 20)
        reasons = [e["reason"] for e in self.proxy.access_log(
            until=lambda es: any(e["reason"] == "rate-limited-shadow" for e in es))]
        self.assertIn("rate-limited-shadow", reasons)


if __name__ == "__main__":
    unittest.main()
