"""Load balancing across endpoints, DNS-named endpoints, and several workers."""
import json
import os
import threading
import unittest

from harness import Bulwark, Reader, Testd, connect, request

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
upstreams:
  - name: app
    endpoints: [{endpoints}]
    balance: {balance}
"""


def spread(port, clients, per_client, path="/b"):
    names = {}
    statuses = []
    lock = threading.Lock()

    def client():
        s = connect(port, timeout=30)
        r = Reader(s)
        for _ in range(per_client):
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
            status, h, _ = r.read_response()
            with lock:
                statuses.append(status)
                names[h.get("x-testd-name")] = names.get(h.get("x-testd-name"), 0) + 1
        s.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return statuses, names


class Balancing(unittest.TestCase):
    def tearDown(self):
        self.proxy.stop()
        for b in self.backends:
            b.stop()

    def test_least_request_steers_away_from_a_slow_endpoint(self):
        self.backends = [Testd(name="fast"), Testd("--delay", "50", name="slow")]
        self.proxy = Bulwark(TEMPLATE, workers=1, balance="least_request",
                             endpoints=", ".join(b.address for b in self.backends))
        statuses, names = spread(self.proxy.port, clients=16, per_client=40)
        self.assertEqual(set(statuses), {200})
        share = names.get("slow", 0) / len(statuses)
        self.assertLess(share, 0.2, names)

    def test_round_robin_alternates(self):
        self.backends = [Testd(name="a"), Testd(name="b"), Testd(name="c")]
        self.proxy = Bulwark(TEMPLATE, workers=1, balance="round_robin",
                             endpoints=", ".join(b.address for b in self.backends))
        seen = [request(self.proxy.port, "GET", "/r")[1]["x-testd-name"] for _ in range(9)]
        self.assertEqual(seen[:3] * 3, seen)
        self.assertEqual(sorted(seen[:3]), ["a", "b", "c"])

    def test_random_uses_every_endpoint(self):
        self.backends = [Testd(name="a"), Testd(name="b")]
        self.proxy = Bulwark(TEMPLATE, workers=1, balance="random",
                             endpoints=", ".join(b.address for b in self.backends))
        statuses, names = spread(self.proxy.port, clients=4, per_client=50)
        self.assertEqual(set(statuses), {200})
        self.assertGreater(names.get("a", 0), 50)
        self.assertGreater(names.get("b", 0), 50)

    def test_dns_named_endpoint(self):
        self.backends = [Testd(name="dns")]
        self.proxy = Bulwark(TEMPLATE.replace("balance: {balance}", "balance: {balance}\n    dns_refresh: 1s"),
                             workers=1, balance="round_robin",
                             endpoints="localhost:%d" % self.backends[0].port)
        status = json.loads(request(self.proxy.admin_port, "GET", "/status")[2])
        addresses = [e["address"] for e in status["upstreams"][0]["endpoints"]]
        self.assertIn("127.0.0.1:%d" % self.backends[0].port, addresses)
        # testd listens on 127.0.0.1 only: keep to the IPv4 answer if ::1 is also returned.
        if len(addresses) == 1:
            for _ in range(5):
                self.assertEqual(request(self.proxy.port, "GET", "/d")[1]["x-testd-name"], "dns")

    def test_four_workers(self):
        self.backends = [Testd(name="a"), Testd(name="b")]
        self.proxy = Bulwark(TEMPLATE, workers=4, balance="least_request",
                             endpoints=", ".join(b.address for b in self.backends))
        self.assertEqual(len(os.listdir("/proc/%d/task" % self.proxy.proc.pid)), 5)
        statuses, names = spread(self.proxy.port, clients=20, per_client=100)
        self.assertEqual(len(statuses), 2000)
        self.assertEqual(set(statuses), {200})
        self.assertGreater(min(names.values()), 500)
        self.assertEqual(self.proxy.metric_eventually(2000, "bulwark_requests_total", route="all", code="200"), 2000)
        self.assertEqual(self.proxy.metric_eventually(0, "bulwark_downstream_connections", listener="inbound"), 0)


if __name__ == "__main__":
    unittest.main()
