"""The admin listener: /healthz, /ready, /metrics, /status, /config; and the access log."""
import json
import unittest

from harness import ProxyTest, request


class Admin(ProxyTest):
    def admin(self, path):
        return request(self.proxy.admin_port, "GET", path)

    def test_healthz_and_ready(self):
        self.assertEqual(self.admin("/healthz")[0], 200)
        self.assertEqual(self.admin("/ready")[0], 200)
        self.assertEqual(self.admin("/nope")[0], 404)

    def test_metrics_after_traffic(self):
        for _ in range(3):
            self.assertEqual(self.get("/m")[0], 200)
        self.assertEqual(self.get("/m?status=503")[0], 503)
        status, h, body = self.admin("/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(h["content-type"].startswith("text/plain"))
        text = body.decode()
        self.assertIn('bulwark_build_info{version="0.1.0"} 1', text)
        p = self.proxy
        self.assertGreaterEqual(p.metric("bulwark_requests_total", listener="inbound", route="all",
                                         upstream="app", code="200"), 3)
        self.assertEqual(p.metric_eventually(1, "bulwark_requests_total", route="all", code="503"), 1)
        self.assertGreaterEqual(p.metric("bulwark_request_duration_seconds_count", route="all", upstream="app"), 4)
        self.assertGreaterEqual(p.metric("bulwark_request_duration_seconds_bucket", route="all", le="+Inf"), 4)
        self.assertGreaterEqual(p.metric("bulwark_upstream_requests_total", upstream="app",
                                         endpoint=self.backend.address, outcome="success"), 3)
        self.assertEqual(p.metric("bulwark_upstream_requests_total", upstream="app", outcome="failure"), 1)
        self.assertIsNotNone(p.metric("bulwark_downstream_connections", listener="inbound"))
        self.assertEqual(p.metric("bulwark_pool_connections", upstream="app", state="idle"), 1)
        for family in ("bulwark_local_replies_total", "bulwark_inflight_requests",
                       "bulwark_pool_connects_total"):
            self.assertIn("# TYPE " + family, text)

    def test_config_is_the_effective_config(self):
        status, h, body = self.admin("/config")
        self.assertEqual(status, 200)
        c = json.loads(body)
        self.assertEqual(c["listeners"][0]["name"], "inbound")
        self.assertEqual(c["listeners"][0]["timeouts"]["header"], "10000ms")
        self.assertEqual(c["upstreams"][0]["endpoints"], [self.backend.address])
        self.assertEqual(c["upstreams"][0]["pool"]["max_idle"], 128)

    def test_status(self):
        status, _, body = self.admin("/status")
        s = json.loads(body)
        self.assertEqual(s["upstreams"][0]["name"], "app")
        self.assertEqual(s["upstreams"][0]["endpoints"][0]["address"], self.backend.address)
        self.assertIn("in_flight", s["upstreams"][0]["endpoints"][0])

    def test_access_log_line(self):
        self.get("/logged/path?secret=1", headers={"X-Request-Id": "log-me"})
        entries = [e for e in self.proxy.access_log() if e["request_id"] == "log-me"]
        self.assertEqual(len(entries), 1)
        e = entries[0]
        self.assertEqual(e["method"], "GET")
        self.assertEqual(e["path"], "/logged/path")
        self.assertEqual(e["status"], 200)
        self.assertEqual(e["route"], "all")
        self.assertEqual(e["upstream"], "app")
        self.assertEqual(e["endpoint"], self.backend.address)
        self.assertEqual(e["client"], "127.0.0.1")
        for key in ("time", "duration", "bytes_in", "bytes_out", "reason", "attempts"):
            self.assertIn(key, e)


if __name__ == "__main__":
    unittest.main()
