"""Active health checks: an endpoint whose probes fail stops getting traffic before clients
notice, and comes back after enough good probes."""
import json
import time
import unittest

from harness import Bulwark, Testd, free_port, request

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
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
    balance: round_robin
    health_check:
      type: {type}
      path: /healthz
      interval: 200ms
      timeout: 100ms
      jitter: 10%
      healthy_threshold: 2
      unhealthy_threshold: 2
      expected_status: [200-299]
"""

INTERVAL, TIMEOUT, UNHEALTHY = 0.2, 0.1, 2
DETECT = UNHEALTHY * INTERVAL * 1.1 + TIMEOUT  # the promise: down within this


class HealthChecks(unittest.TestCase):
    def setUp(self):
        self.good, self.sick = Testd(name="good"), Testd(name="sick")
        self.backends = [self.good, self.sick]

    def start(self, endpoints, type="http"):
        self.proxy = Bulwark(TEMPLATE, endpoints=", ".join(endpoints), type=type)

    def tearDown(self):
        code = self.proxy.stop()
        for b in self.backends:
            b.stop()
        self.assertEqual(code, 0, self.proxy.stderr_text()[-3000:])

    def healthy(self, backend_address):
        return self.proxy.metric("bulwark_endpoint_healthy", endpoint=backend_address)

    def wait_health(self, address, value, limit):
        start = time.time()
        while time.time() - start < limit + 2:
            if self.healthy(address) == value:
                return time.time() - start
            time.sleep(0.02)
        self.fail("health of %s did not become %s" % (address, value))

    def wait_probed_healthy(self, address, limit=2.0):
        """Until /status shows `address` healthy (not merely unknown, which the gauge shows as 1)."""
        deadline = time.time() + limit
        while time.time() < deadline:
            status = json.loads(request(self.proxy.admin_port, "GET", "/status")[2])
            for e in status["upstreams"][0]["endpoints"]:
                if e["address"] == address and e["health"] == "healthy":
                    return
            time.sleep(0.02)
        self.fail("%s was never probed healthy" % address)

    def names(self, n=20):
        out = []
        for _ in range(n):
            status, h, _ = request(self.proxy.port, "GET", "/x")
            self.assertEqual(status, 200)
            out.append(h["x-testd-name"])
        return out

    def test_failing_health_path_takes_the_endpoint_out_and_back(self):
        self.start([b.address for b in self.backends])
        self.wait_probed_healthy(self.sick.address)
        self.assertIn("sick", self.names(6))
        request(self.sick.port, "GET", "/__health?status=503")
        took = self.wait_health(self.sick.address, 0, DETECT)
        print("marked down %.0f ms after the health path started failing (bound %.0f ms)"
              % (took * 1000, DETECT * 1000))
        self.assertLess(took, DETECT + 0.3)  # + the polling and a loaded machine
        self.assertEqual(set(self.names()), {"good"})  # zero client errors, none to the sick one
        # Its idle pooled connections were closed (only the /__stats connection remains).
        time.sleep(0.1)
        self.assertEqual(self.sick.stats()["connections_open"], 1)
        self.assertIn("health healthy -> unhealthy", self.proxy.stderr_text())
        request(self.sick.port, "GET", "/__health?status=200")
        self.wait_health(self.sick.address, 1, 2 * INTERVAL * 1.1 + TIMEOUT)
        self.assertIn("sick", self.names(6))
        self.assertGreater(self.proxy.metric("bulwark_health_checks_total", endpoint=self.sick.address,
                                             result="failure"), 1)
        status = json.loads(request(self.proxy.admin_port, "GET", "/status")[2])
        self.assertEqual({e["health"] for e in status["upstreams"][0]["endpoints"]}, {"healthy"})

    def test_killed_backend(self):
        self.start([b.address for b in self.backends])
        self.wait_probed_healthy(self.sick.address)
        self.sick.stop()
        self.wait_health(self.sick.address, 0, DETECT)
        self.assertEqual(set(self.names()), {"good"})

    def test_slow_health_answer_counts_as_failure(self):
        self.start([b.address for b in self.backends])
        self.wait_probed_healthy(self.sick.address)
        request(self.sick.port, "GET", "/__health?delay=300")
        self.wait_health(self.sick.address, 0, DETECT + INTERVAL)
        self.assertGreater(self.proxy.metric("bulwark_health_checks_total", endpoint=self.sick.address,
                                             result="timeout"), 0)
        self.assertEqual(set(self.names()), {"good"})

    def test_tcp_check_against_a_closed_port(self):
        closed = "127.0.0.1:%d" % free_port()
        self.start([self.good.address, closed], type="tcp")
        self.wait_health(closed, 0, DETECT)
        self.assertEqual(self.healthy(self.good.address), 1)
        self.assertEqual(set(self.names()), {"good"})

    def test_all_marked_down_routes_to_all_of_them(self):
        # A wrong health-check path (or a /healthz that fails for a reason of its own) marks
        # every endpoint down: the traffic still goes to all of them (panic mode), counted
        # and logged, instead of 503 for everyone.
        self.start([b.address for b in self.backends])
        for b in self.backends:
            request(b.port, "GET", "/__health?status=500")
        for b in self.backends:
            self.wait_health(b.address, 0, DETECT)
        names = []
        for _ in range(10):
            status, h, _ = request(self.proxy.port, "GET", "/x")
            self.assertEqual(status, 200, h)
            names.append(h["x-testd-name"])
        self.assertEqual(set(names), {"good", "sick"})
        self.assertEqual(self.proxy.metric("bulwark_panic_routed_total", upstream="app"), 10)
        self.assertEqual(self.proxy.metric("bulwark_upstream_panic", upstream="app"), 1)
        self.assertIn("every endpoint is ejected", self.proxy.stderr_text())
        # One comes back: traffic goes to it alone, and panic mode ends.
        request(self.good.port, "GET", "/__health?status=200")
        self.wait_health(self.good.address, 1, 2 * INTERVAL * 1.1 + TIMEOUT)
        self.assertEqual(set(self.names()), {"good"})
        self.assertEqual(self.proxy.metric("bulwark_upstream_panic", upstream="app"), 0)
        self.assertEqual(self.proxy.metric("bulwark_panic_routed_total", upstream="app"), 10)
        self.assertIn("panic mode ends", self.proxy.stderr_text())

if __name__ == "__main__":
    unittest.main()
