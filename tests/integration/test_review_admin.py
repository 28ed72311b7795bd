"""Admin connections held open without a request cannot lock health probes out: past
admin.max_connections the connection idle the longest makes room; only when every admin
connection has a request under way is a new one refused (and counted)."""
import time
import unittest

from harness import MINIMAL, Bulwark, Reader, Testd, connect, request, wait_for
from test_admin import ADMIN_LIMITS

# test_admin's admin limits, with timeouts long enough that no connection times out here.
BUSY_LIMITS = ADMIN_LIMITS.replace("header: 300ms, idle: 1s", "header: 10s, idle: 60s")


class AdminIdleEviction(unittest.TestCase):
    def setUp(self):
        self.backend = Testd()
        self.proxy = None

    def tearDown(self):
        code = self.proxy.stop() if self.proxy else None
        self.backend.stop()
        if code not in (0, None):
            raise AssertionError("bulwark exited with %s:\n%s" % (code, self.proxy.stderr_text()))

    def test_idle_connections_do_not_lock_probes_out(self):
        # Regression: 64 connections that never sent a byte (the default max_connections)
        # made every /ready and /healthz probe fail for as long as they were held.
        self.proxy = Bulwark(MINIMAL, upstream=self.backend.address)
        held = [connect(self.proxy.admin_port) for _ in range(64)]
        wait_for(lambda: request(self.proxy.admin_port, "GET", "/healthz", timeout=3)[0] == 200,
                 what="the 64 idle connections accepted")  # (the probe itself made room once)
        for path in ("/ready", "/healthz", "/ready"):
            self.assertEqual(request(self.proxy.admin_port, "GET", path, timeout=3)[0], 200, path)
        for s in held:
            s.close()

    def test_new_connection_refused_when_none_is_idle(self):
        self.proxy = Bulwark(BUSY_LIMITS, upstream=self.backend.address)
        busy = [connect(self.proxy.admin_port) for _ in range(4)]
        readers = [Reader(s) for s in busy]
        for s, r in zip(busy, readers):
            # A request answered (so the server has read this connection), then one under way:
            # a head not yet complete, read with it.
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\nGET /ready HTTP/1.1\r\nHost: a\r\n")
            self.assertEqual(r.read_response()[0], 200)
        extra = connect(self.proxy.admin_port)
        extra.settimeout(3)
        start = time.time()
        self.assertEqual(extra.recv(1), b"")  # closed at once
        self.assertLess(time.time() - start, 2)
        extra.close()
        for s, r in zip(busy, readers):  # none of the busy ones was closed
            s.sendall(b"\r\n")
            self.assertEqual(r.read_response()[0], 200)
        for s in busy:
            s.close()
        self.assertGreaterEqual(
            wait_for(lambda: self.proxy.metric("bulwark_admin_connections_refused_total"),
                     what="the refused connection counted"), 1)


if __name__ == "__main__":
    unittest.main()
