"""Load shedding (upstream `load_shedding`), behaviour by behaviour against the real binary:
503 overloaded with Retry-After when the limit and its queue are full, priorities (critical
takes a sheddable request's place and is served first), shadow mode, shed requests are not
breaker failures, retries yield to waiting first attempts, and a WebSocket tunnel does not
hold the limit. The adaptive limit under open-loop load is in test_load_shedding_load.py."""
import threading
import time
import unittest

from harness import Bulwark, Testd, connect, problem, request, wait_for

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
workers: {workers}
drain: {{ timeout: {drain} }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - name: all
        match: {{ prefix: / }}
        upstream: app
        timeout: {route_timeout}
{route_extra}
upstreams:
  - name: app
    endpoints: [{upstream}]
{upstream_extra}
    load_shedding:
      algorithm: fixed
      initial_limit: {limit}
      min_limit: 1
      queue: {{ size: {queue}, timeout: {timeout} }}
      enforce: {enforce}
{shed_extra}
"""


def start(backend, limit=2, queue=2, timeout="2s", workers=1, enforce="true", route_extra="",
          upstream_extra="", route_timeout="10s", drain="20s", shed_extra=""):
    return Bulwark(TEMPLATE, upstream=backend.address, limit=limit, queue=queue, timeout=timeout,
                   workers=workers, enforce=enforce, route_extra=route_extra,
                   upstream_extra=upstream_extra, route_timeout=route_timeout, drain=drain,
                   shed_extra=shed_extra)


class Call(threading.Thread):
    """One request on its own connection, in the background."""

    def __init__(self, port, path, priority=None):
        super().__init__()
        self.port, self.path = port, path
        self.headers = {"x-priority": priority} if priority else {}
        self.start_time = time.time()
        self.result = None
        self.start()

    def run(self):
        status, h, body = request(self.port, "GET", self.path, headers=self.headers)
        self.result = (status, h, body, time.time() - self.start_time)

    def get(self):
        self.join(30)
        return self.result


def status_of(proxy):
    import json
    _, _, body = request(proxy.admin_port, "GET", "/status")
    return json.loads(body)["upstreams"][0]["load_shedding"]


class LoadShedding(unittest.TestCase):
    def setUp(self):
        self.backend = Testd()
        self.proxy = None

    def tearDown(self):
        if self.proxy:
            self.proxy.stop()
        self.backend.stop()

    def test_over_the_limit_and_a_full_queue_is_503_overloaded(self):
        self.proxy = start(self.backend, limit=2, queue=2, timeout="300ms")
        port = self.proxy.port
        calls = [Call(port, "/slow?delay=800")]
        calls.append(Call(port, "/slow?delay=800"))
        wait_for(lambda: status_of(self.proxy)["in_flight"] == 2, what="two in flight")
        queued = [Call(port, "/q?delay=10"), Call(port, "/q?delay=10")]
        wait_for(lambda: status_of(self.proxy)["queued"] == 2, what="two queued")
        s = status_of(self.proxy)
        self.assertEqual(s["limit"], 2)
        self.assertEqual(s["algorithm"], "fixed")
        # Queue full: shed at once.
        status, h, body = request(port, "GET", "/x")
        self.assertEqual(status, 503)
        self.assertEqual(h["x-bulwark-reason"], "overloaded")
        self.assertEqual(h["retry-after"], "1")
        self.assertEqual(problem(body)["status"], 503)
        # The queued ones wait 300 ms (the queue timeout), then are shed too.
        for c in queued:
            st, qh, _, took = c.get()
            self.assertEqual(st, 503)
            self.assertEqual(qh["x-bulwark-reason"], "overloaded")
            self.assertGreater(took, 0.25)
            self.assertLess(took, 0.75)
        for c in calls:
            self.assertEqual(c.get()[0], 200)
        self.assertEqual(self.proxy.metric("bulwark_shed_total", upstream="app", priority="normal"), 3)
        self.assertEqual(self.proxy.metric("bulwark_concurrency_limit", upstream="app"), 2)
        self.assertEqual(self.proxy.metric_eventually(3, "bulwark_local_replies_total", reason="overloaded"), 3)
        entries = self.proxy.access_log(until=lambda e: len(e) >= 5)
        self.assertEqual(sum(1 for e in entries if e.get("reason") == "overloaded"), 3)
        # The backend saw only what was admitted.
        self.assertEqual(self.backend.stats()["requests"] - 1, 2)  # minus this /__stats
        wait_for(lambda: status_of(self.proxy)["in_flight"] == 0, what="units given back")

    def test_a_queued_request_gets_a_freed_unit(self):
        self.proxy = start(self.backend, limit=1, queue=5, timeout="3s")
        port = self.proxy.port
        first = Call(port, "/a?delay=300")
        wait_for(lambda: status_of(self.proxy)["in_flight"] == 1, what="one in flight")
        second = Call(port, "/b?delay=10")
        st, _, _, took = second.get()
        self.assertEqual(st, 200)
        self.assertGreater(took, 0.2)  # it waited for the first one
        self.assertEqual(first.get()[0], 200)
        self.assertEqual(self.proxy.metric("bulwark_shed_total", upstream="app"), 0)

    def test_critical_takes_the_place_of_sheddable_and_goes_first(self):
        # The evictions make the queue stand (a request was shed): waits shrink to a tenth of
        # queue.timeout, here 2 s, still far above what the normal request needs.
        self.proxy = start(self.backend, limit=1, queue=2, timeout="20s")
        port = self.proxy.port
        hold = Call(port, "/hold?delay=500")
        wait_for(lambda: status_of(self.proxy)["in_flight"] == 1, what="one in flight")
        sheddable = [Call(port, "/s?delay=10", "sheddable") for _ in range(2)]
        wait_for(lambda: status_of(self.proxy)["queued"] == 2, what="two queued")
        critical = Call(port, "/c?delay=10", "critical")
        normal = Call(port, "/n?delay=10", "normal")
        # The critical request evicts the newest sheddable one; the normal one the other.
        results = [c.get() for c in sheddable]
        self.assertEqual(sorted(r[0] for r in results), [503, 503])
        for r in results:
            self.assertEqual(r[1]["x-bulwark-reason"], "overloaded")
            self.assertIn("higher priority", problem(r[2])["detail"])
        st_c, _, _, _ = critical.get()
        st_n, _, body_n, _ = normal.get()
        self.assertEqual((st_c, st_n), (200, 200), body_n)
        self.assertEqual(hold.get()[0], 200)
        # Served in priority order after the holder: the critical one first.
        entries = self.proxy.access_log(until=lambda e: len(e) >= 5)
        served = [e["path"] for e in entries if e["status"] == 200]
        self.assertEqual(served, ["/hold", "/c", "/n"])
        self.assertEqual(self.proxy.metric("bulwark_shed_total", upstream="app", priority="sheddable"), 2)
        self.assertEqual(self.proxy.metric("bulwark_shed_total", upstream="app", priority="critical"), 0)

    def test_shadow_mode_counts_and_logs_but_never_sheds(self):
        self.proxy = start(self.backend, limit=1, queue=0, enforce="false")
        port = self.proxy.port
        calls = [Call(port, "/x?delay=300") for _ in range(4)]
        results = [c.get() for c in calls]
        self.assertEqual([r[0] for r in results], [200] * 4)
        self.assertEqual(self.proxy.metric("bulwark_shed_total", upstream="app", priority="normal"), 3)
        entries = self.proxy.access_log(until=lambda e: len(e) >= 4)
        self.assertEqual(sorted(e.get("reason", "") for e in entries).count("overloaded-shadow"), 3)

    def test_being_shed_is_not_an_endpoint_failure(self):
        breaker = "    circuit_breaker: { consecutive_failures: 1, open_for: 30s }"
        self.proxy = start(self.backend, limit=1, queue=0, upstream_extra=breaker)
        port = self.proxy.port
        hold = Call(port, "/hold?delay=400")
        wait_for(lambda: status_of(self.proxy)["in_flight"] == 1, what="one in flight")
        for _ in range(3):
            status, h, _ = request(port, "GET", "/x")
            self.assertEqual((status, h["x-bulwark-reason"]), (503, "overloaded"))
        self.assertEqual(hold.get()[0], 200)
        # The breaker heard nothing of the shed requests: it is closed and serves.
        status, _, _ = request(port, "GET", "/after")
        self.assertEqual(status, 200)
        self.assertEqual(self.proxy.metric("bulwark_circuit_state", upstream="app", state="open"), 0)

    def test_a_retry_yields_to_a_waiting_first_attempt(self):
        retry = "        retry: { attempts: 3, on: [5xx], backoff: { base: 10ms, max: 20ms } }"
        self.proxy = start(self.backend, limit=1, queue=5, timeout="3s", route_extra=retry)
        port = self.proxy.port
        # Alone, a failing request is retried.
        status, h, _ = request(port, "GET", "/fail?status=503")
        self.assertEqual((status, h.get("x-bulwark-attempts")), (503, "3"))
        # With a first attempt waiting for the unit, the failing one is not retried: its 503
        # goes back at once and the waiting request gets the unit.
        before = self.backend.stats()["requests"]
        failing = Call(port, "/fail?status=503&delay=300")
        wait_for(lambda: status_of(self.proxy)["in_flight"] == 1, what="one in flight")
        waiting = Call(port, "/w")
        wait_for(lambda: status_of(self.proxy)["queued"] == 1, what="one queued")
        st, fh, _, _ = failing.get()
        self.assertEqual(st, 503)
        self.assertNotIn("x-bulwark-attempts", fh)
        self.assertEqual(waiting.get()[0], 200)
        # The failing request went upstream once, /w once, and this /__stats.
        self.assertEqual(self.backend.stats()["requests"] - before, 1 + 1 + 1)
        self.assertEqual(self.proxy.metric("bulwark_shed_total", upstream="app", priority="normal"), 1)

    def test_a_websocket_tunnel_does_not_hold_the_limit(self):
        self.proxy = start(self.backend, limit=1, queue=0)
        s = connect(self.proxy.port)
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        self.assertTrue(head.startswith(b"HTTP/1.1 101"))
        wait_for(lambda: status_of(self.proxy)["in_flight"] == 0, what="the unit given back")
        status, _, _ = request(self.proxy.port, "GET", "/other")
        self.assertEqual(status, 200)
        s.close()

    def test_units_are_shared_by_the_workers(self):
        # Two workers, limit 2: never more than two requests at the backend at once.
        self.proxy = start(self.backend, limit=2, queue=50, timeout="5s", workers=2)
        calls = [Call(self.proxy.port, "/p?delay=150") for _ in range(8)]
        results = [c.get() for c in calls]
        self.assertEqual([r[0] for r in results], [200] * 8)
        took = max(r[3] for r in results)
        self.assertGreater(took, 0.55)  # 8 requests, 2 at a time, 150 ms each: 4 rounds


if __name__ == "__main__":
    unittest.main()
