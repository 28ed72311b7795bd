"""An upstream endpoint given as a host name is re-resolved every dns_refresh."""
import time
import unittest

from harness import Bulwark, Testd, request, wait_for

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app }}
upstreams:
  - name: app
    endpoints: [localhost:{backend_port}]
    dns_refresh: 100ms
"""


class DnsRefresh(unittest.TestCase):
    def test_host_name_is_refreshed_without_false_failures(self):
        # Regression: every refresh logged "lookup of 'localhost' failed; keeping the last
        # answer" (an answered lookup was reported as failed), so changes were never seen.
        backend = Testd()
        proxy = Bulwark(TEMPLATE, backend_port=backend.port)
        try:
            self.assertEqual(request(proxy.port, "GET", "/")[0], 200)
            wait_for(lambda: (proxy.metric("bulwark_dns_lookups_total", upstream="app",
                                           result="success") or 0) >= 5,
                     what="five successful refreshes")
            self.assertEqual(proxy.metric("bulwark_dns_lookups_total", upstream="app",
                                          result="failure"), 0)
            self.assertNotIn("failed", proxy.stderr_text())
            self.assertEqual(request(proxy.port, "GET", "/")[0], 200)
        finally:
            self.assertEqual(proxy.stop(), 0)
            backend.stop()


if __name__ == "__main__":
    unittest.main()
