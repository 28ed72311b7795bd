"""Upstream connection pools: the cap on connections holds under load, idle connections the
backend closes cost no client request, Connection: close and HTTP/1.0 upstreams."""
import threading
import time
import unittest

from harness import Bulwark, Reader, Testd, connect, pattern, request, wait_for

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
    endpoints: [{upstream}]
    pool: {{ max_connections: {max_connections}, max_idle: {max_idle}, idle_timeout: {idle_timeout} }}
"""


def hammer(port, clients, per_client, path="/p?size=16"):
    """`clients` keep-alive connections, each sending `per_client` requests. Returns statuses."""
    statuses = []
    lock = threading.Lock()

    def client():
        s = connect(port, timeout=30)
        r = Reader(s)
        mine = []
        for _ in range(per_client):
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
            status, _, body = r.read_response()
            mine.append(status)
        s.close()
        with lock:
            statuses.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return statuses


class PoolCap(unittest.TestCase):
    def test_many_clients_share_at_most_max_connections(self):
        backend = Testd()
        proxy = Bulwark(TEMPLATE, upstream=backend.address, max_connections=8, max_idle=8,
                        idle_timeout="60s")
        try:
            statuses = hammer(proxy.port, clients=50, per_client=200)
            self.assertEqual(len(statuses), 10000)
            self.assertEqual(set(statuses), {200})
            stats = backend.stats()
            # Every upstream connection the proxy ever opened counts; /__stats adds one.
            self.assertLessEqual(stats["connections_total"] - 1, 8)
            self.assertEqual(stats["requests"], 10000 + 1)
            self.assertLessEqual(proxy.metric("bulwark_pool_connects_total", upstream="app", result="success"), 8)
        finally:
            proxy.stop()
            backend.stop()

    def test_idle_timeout_and_max_idle(self):
        backend = Testd()
        proxy = Bulwark(TEMPLATE, upstream=backend.address, max_connections=16, max_idle=2,
                        idle_timeout="300ms")
        try:
            statuses = hammer(proxy.port, clients=6, per_client=5, path="/p?delay=50")
            self.assertEqual(set(statuses), {200})
            idle = lambda: proxy.metric("bulwark_pool_connections", upstream="app", state="idle")
            # Every response is complete, so every connection is back: at most max_idle kept.
            wait_for(lambda: proxy.metric("bulwark_pool_connections", upstream="app", state="active") == 0,
                     what="no active pooled connection")
            self.assertLessEqual(idle(), 2)
            self.assertGreater(idle(), 0)
            wait_for(lambda: idle() == 0, timeout=3, what="idle connections closed by idle_timeout")
            # Only the /__stats connection stays open at the backend.
            wait_for(lambda: backend.stats()["connections_open"] == 1, what="backend connections closed")
        finally:
            proxy.stop()
            backend.stop()


class WaitingForAConnection(unittest.TestCase):
    def test_request_answered_while_waiting_leaves_the_pool_sound(self):
        backend = Testd()
        template = TEMPLATE.replace("routes:", "limits: {{ max_body_bytes: 1KiB }}\n    routes:")
        proxy = Bulwark(template, upstream=backend.address, max_connections=1, max_idle=1,
                        idle_timeout="60s")
        try:
            slow = threading.Thread(target=request, args=(proxy.port, "GET", "/slow?delay=500"))
            slow.start()
            wait_for(lambda: proxy.metric("bulwark_inflight_requests", upstream="app") == 1,
                     what="the slow request in flight")
            # Waits for the only connection, then goes over max_body_bytes while waiting: 413.
            s = connect(proxy.port)
            s.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                      b"800\r\n" + b"x" * 2048 + b"\r\n")
            status, h, _ = Reader(s).read_response()
            self.assertEqual((status, h["x-bulwark-reason"]), (413, "body-too-large"))
            s.close()
            slow.join(5)
            for _ in range(3):  # the connection the 413 was waiting for serves others
                self.assertEqual(request(proxy.port, "GET", "/after")[0], 200)
            self.assertEqual(proxy.metric_eventually(0, "bulwark_inflight_requests", upstream="app"), 0)
        finally:
            proxy.stop()
            backend.stop()


class BackendClosesIdle(unittest.TestCase):
    def test_no_client_request_fails(self):
        backend = Testd("--idle-close", "40")
        proxy = Bulwark(TEMPLATE, upstream=backend.address, max_connections=4, max_idle=4,
                        idle_timeout="60s")
        try:
            failures = []
            # Requests spaced around the backend's idle close: some land on connections the
            # backend has just closed or is closing.
            for i in range(120):
                status, _, body = request(proxy.port, "GET", "/c?size=10")
                if status != 200 or body != pattern(10):
                    failures.append(status)
                time.sleep((i % 7) * 0.011)
            self.assertEqual(failures, [])
        finally:
            proxy.stop()
            backend.stop()


class StaleConnection(unittest.TestCase):
    def test_replayed_stale_connection_is_not_counted_as_a_reset(self):
        backend = Testd()
        proxy = Bulwark(TEMPLATE, upstream=backend.address, max_connections=1, max_idle=1,
                        idle_timeout="60s")
        try:
            self.assertEqual(request(proxy.port, "GET", "/warm")[0], 200)  # one pooled connection
            wait_for(lambda: proxy.metric("bulwark_pool_connections", upstream="app", state="idle") == 1,
                     what="the connection back in the pool")
            for i in range(3):
                # The backend drops the pooled connection as it is reused: the request goes
                # again on a fresh connection and succeeds.
                status, h, body = request(proxy.port, "GET", "/s?reset=reused&size=3")
                self.assertEqual((status, body), (200, pattern(3)))
                self.assertNotIn("x-bulwark-attempts", h)
            self.assertEqual(proxy.metric_eventually(3, "bulwark_pool_stale_retries_total", upstream="app"), 3)
            self.assertEqual(proxy.metric("bulwark_upstream_requests_total", outcome="reset"), 0)
            self.assertEqual(proxy.metric("bulwark_upstream_requests_total", outcome="success"), 4)
        finally:
            code = proxy.stop()
            backend.stop()
        self.assertEqual(code, 0, proxy.stderr_text()[-3000:])


class UpstreamClose(unittest.TestCase):
    def test_connection_close_and_http10_upstream_responses_are_not_reused(self):
        backend = Testd()
        proxy = Bulwark(TEMPLATE, upstream=backend.address, max_connections=4, max_idle=4,
                        idle_timeout="60s")
        try:
            before = backend.stats()["connections_total"]
            for _ in range(5):
                status, _, body = request(proxy.port, "GET", "/c?size=5&close=1")
                self.assertEqual((status, body), (200, pattern(5)))
            # Each response said Connection: close, so each request needed a new connection.
            self.assertEqual(backend.stats()["connections_total"] - before, 5 + 1)
            self.assertEqual(proxy.metric("bulwark_pool_connections", upstream="app", state="idle"), 0)
            # An HTTP/1.0 answer without keep-alive is not reused either; with a length it is
            # passed on to an HTTP/1.1 client as it is, and a close-delimited one is re-chunked.
            before = backend.stats()["connections_total"]
            for path in ("/h?size=7&http10=1", "/h?size=9&http10=1&eof=1"):
                for _ in range(2):
                    status, h, body = request(proxy.port, "GET", path)
                    self.assertEqual(status, 200)
                    self.assertEqual(len(body), int(path.split("size=")[1].split("&")[0]))
            self.assertEqual(backend.stats()["connections_total"] - before, 4 + 1)
        finally:
            proxy.stop()
            backend.stop()


if __name__ == "__main__":
    unittest.main()
