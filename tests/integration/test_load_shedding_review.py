"""Load shedding under hostile clients and failing upstreams (review): requests that wait in
the queue while their client goes away, pipelines, sends a body or waits for 100 Continue;
units of the limit and queue places given back after every kind of ending; priority header
spellings; shadow mode; two workers; a graceful drain with requests queued; config errors.
Every test checks /status load_shedding.in_flight and queued and bulwark_inflight_requests
return to 0."""
import json
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest
import zlib

from harness import (BULWARK, Bulwark, Reader, Testd, chunked, connect, crc_hex, free_port,
                     problem, request, wait_for)
# The configuration of test_load_shedding.py (fixed limit, queue, route and drain timeouts).
from test_load_shedding import TEMPLATE


def start(address, limit=1, queue=5, timeout="3s", workers=1, enforce="true", route_extra="",
          upstream_extra="", shed_extra="", route_timeout="10s", drain="20s"):
    return Bulwark(TEMPLATE, upstream=address, limit=limit, queue=queue, timeout=timeout,
                   workers=workers, enforce=enforce, route_extra=route_extra,
                   upstream_extra=upstream_extra, shed_extra=shed_extra,
                   route_timeout=route_timeout, drain=drain)


def status_of(proxy):
    _, _, body = request(proxy.admin_port, "GET", "/status")
    return json.loads(body)["upstreams"][0]["load_shedding"]


class Call(threading.Thread):
    """One request on its own connection, in the background."""

    def __init__(self, port, path, headers=None, method="GET", body=b""):
        super().__init__()
        self.port, self.path, self.method, self.body = port, path, method, body
        self.headers = headers or {}
        self.start_time = time.time()
        self.result = None
        self.error = None
        self.start()

    def run(self):
        try:
            status, h, body = request(self.port, self.method, self.path, headers=self.headers,
                                      body=self.body, timeout=20)
            self.result = (status, h, body, time.time() - self.start_time)
        except Exception as e:  # noqa: BLE001 - reported by get()
            self.error = e

    def get(self):
        self.join(30)
        if self.error:
            raise self.error
        return self.result


def send_head(port, path, extra=b"", method=b"GET"):
    s = connect(port)
    s.sendall(method + b" " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
    return s


def rst_close(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


class Base(unittest.TestCase):
    testd_args = ()

    def setUp(self):
        self.backend = Testd(*self.testd_args)
        self.proxy = None

    def tearDown(self):
        if self.proxy:
            code = self.proxy.stop()
            if code not in (0, None) and not getattr(self, "expect_exit", False):
                self.fail("bulwark exited with %s:\n%s" % (code, self.proxy.stderr_text()))
        self.backend.stop()

    def hold(self, ms=600, n=1, headers=None):
        """n requests that hold the limit for `ms`."""
        calls = [Call(self.proxy.port, "/hold?delay=%d" % ms, headers) for _ in range(n)]
        wait_for(lambda: status_of(self.proxy)["in_flight"] == n, what="%d in flight" % n)
        return calls

    def assert_settled(self, timeout=5.0):
        """Every unit and queue place given back, nothing in flight."""
        def settled():
            s = status_of(self.proxy)
            inflight = self.proxy.metric("bulwark_inflight_requests")
            return (s["in_flight"], s["queued"], s["critical_in_flight"], inflight)
        try:
            wait_for(lambda: settled() == (0, 0, 0, 0.0), timeout=timeout, what="settled")
        except AssertionError:
            self.fail("not settled: (in_flight, queued, critical_in_flight, "
                      "bulwark_inflight_requests) = %r" % (settled(),))
        # And the limit really is free: a request goes through at once.
        t = time.time()
        status, _, _ = request(self.proxy.port, "GET", "/after")
        self.assertEqual(status, 200)
        self.assertLess(time.time() - t, 1.0)


class ClientsWhileQueued(Base):
    def test_rst_while_queued_gives_back_the_place(self):
        self.proxy = start(self.backend.address, limit=1, queue=5, timeout="5s")
        holders = self.hold(800)
        s = send_head(self.proxy.port, "/gone")
        wait_for(lambda: status_of(self.proxy)["queued"] == 1, what="one queued")
        rst_close(s)
        wait_for(lambda: status_of(self.proxy)["queued"] == 0, what="the place given back")
        self.assertEqual(holders[0].get()[0], 200)
        self.assert_settled()
        # The abandoned request never reached the backend.
        self.assertEqual(self.backend.stats()["requests"] - 1, 2)  # /hold, /after

    def test_fin_while_queued_is_still_answered(self):
        self.proxy = start(self.backend.address, limit=1, queue=5, timeout="5s")
        holders = self.hold(500)
        s = send_head(self.proxy.port, "/halfclosed")
        wait_for(lambda: status_of(self.proxy)["queued"] == 1, what="one queued")
        s.shutdown(socket.SHUT_WR)
        status, _, _ = Reader(s).read_response()
        self.assertEqual(status, 200)
        s.close()
        self.assertEqual(holders[0].get()[0], 200)
        self.assert_settled()

    def test_many_clients_reset_while_queued(self):
        self.proxy = start(self.backend.address, limit=1, queue=50, timeout="5s")
        holders = self.hold(800)
        socks = [send_head(self.proxy.port, "/gone%d" % i) for i in range(20)]
        wait_for(lambda: status_of(self.proxy)["queued"] == 20, what="20 queued")
        for s in socks[::2]:
            rst_close(s)
        for s in socks[1::2]:
            s.close()  # FIN and no read: still answered, the answer goes nowhere
        self.assertEqual(holders[0].get()[0], 200)
        self.assert_settled(timeout=10)

    def test_pipelined_requests_behind_a_queued_one(self):
        self.proxy = start(self.backend.address, limit=1, queue=5, timeout="5s")
        holders = self.hold(400)
        s = connect(self.proxy.port)
        s.sendall(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /p2 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r = Reader(s)
        paths = []
        for _ in range(3):
            status, h, body = r.read_response()
            self.assertEqual(status, 200, body)
            paths.append(h.get("x-testd-path") or body)
        s.close()
        self.assertEqual(holders[0].get()[0], 200)
        self.assert_settled()
        entries = self.proxy.access_log(until=lambda e: len(e) >= 5)
        self.assertEqual([e["path"] for e in entries if e["path"].startswith("/p")],
                         ["/p1", "/p2", "/p3"])

    def test_pipelined_requests_behind_a_shed_one(self):
        self.proxy = start(self.backend.address, limit=1, queue=5, timeout="100ms")
        holders = self.hold(600)
        s = connect(self.proxy.port)
        s.sendall(b"GET /p1 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /p2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r = Reader(s)
        status, h, body = r.read_response()
        self.assertEqual((status, h.get("x-bulwark-reason")), (503, "overloaded"))
        status2, h2, _ = r.read_response()
        self.assertEqual((status2, h2.get("x-bulwark-reason")), (503, "overloaded"))
        s.close()
        self.assertEqual(holders[0].get()[0], 200)
        self.assert_settled()


class BodiesWhileQueued(Base):
    def post_while_queued(self, body, headers, wire_body):
        self.proxy = start(self.backend.address, limit=1, queue=5, timeout="5s")
        holders = self.hold(500)
        s = send_head(self.proxy.port, "/upload", headers, method=b"POST")
        s.sendall(wire_body)
        status, h, _ = Reader(s).read_response()
        s.close()
        self.assertEqual(status, 200)
        self.assertEqual(h.get("x-testd-body-bytes"), str(len(body)))
        self.assertEqual(h.get("x-testd-body-crc32"), crc_hex(body))
        self.assertEqual(holders[0].get()[0], 200)
        self.assert_settled()

    def test_content_length_body_waits_intact(self):
        body = os.urandom(3 << 20)
        self.post_while_queued(body, b"Content-Length: %d\r\n" % len(body), body)

    def test_chunked_body_waits_intact(self):
        body = os.urandom(3 << 20)
        self.post_while_queued(body, b"Transfer-Encoding: chunked\r\n", chunked(body, 65536))

    def test_body_of_a_shed_request_gets_a_clean_503(self):
        self.proxy = start(self.backend.address, limit=1, queue=5, timeout="200ms")
        holders = self.hold(1500)
        body = os.urandom(1 << 20)
        s = send_head(self.proxy.port, "/upload", b"Content-Length: %d\r\n" % len(body),
                      method=b"POST")
        sender = threading.Thread(target=lambda: self._send_quietly(s, body))
        sender.start()
        status, h, resp = Reader(s).read_response()
        self.assertEqual((status, h.get("x-bulwark-reason")), (503, "overloaded"))
        self.assertEqual(problem(resp)["status"], 503)
        self.assertEqual(h.get("connection"), "close")
        sender.join(10)
        s.close()
        self.assertEqual(holders[0].get()[0], 200)
        self.assert_settled()

    @staticmethod
    def _send_quietly(s, data):
        try:
            s.sendall(data)
        except OSError:
            pass

    def test_expect_continue_while_queued(self):
        self.proxy = start(self.backend.address, limit=1, queue=5, timeout="5s")
        holders = self.hold(500)
        body = os.urandom(100000)
        s = send_head(self.proxy.port, "/upload",
                      b"Content-Length: %d\r\nExpect: 100-continue\r\n" % len(body),
                      method=b"POST")
        r = Reader(s)
        s.settimeout(5)
        _, status, _ = r.read_head()
        # No 100 Continue before a unit is free: the client must not send its body yet.
        self.assertEqual(status, 100)
        self.assertEqual(holders[0].get()[0], 200)
        s.sendall(body)
        status, h, _ = r.read_response()
        self.assertEqual(status, 200)
        self.assertEqual(h.get("x-testd-body-crc32"), crc_hex(body))
        s.close()
        self.assert_settled()

    def test_expect_continue_shed_gets_503_without_100(self):
        self.proxy = start(self.backend.address, limit=1, queue=5, timeout="150ms")
        holders = self.hold(800)
        s = send_head(self.proxy.port, "/upload",
                      b"Content-Length: 1000\r\nExpect: 100-continue\r\n", method=b"POST")
        status, h, _ = Reader(s).read_response()
        self.assertEqual((status, h.get("x-bulwark-reason")), (503, "overloaded"))
        s.close()
        self.assertEqual(holders[0].get()[0], 200)
        self.assert_settled()


class NoLeaks(Base):
    def test_upstream_reset(self):
        self.proxy = start(self.backend.address, limit=2, queue=5)
        calls = [Call(self.proxy.port, "/r?reset=before&delay=100") for _ in range(4)]
        calls += [Call(self.proxy.port, "/r?reset=after&size=200000&delay=100") for _ in range(4)]
        # Each ends as a reset reported as such (502), shed (503: 8 calls, 2 in flight, a
        # queue of 5), or, for a reset after the head, a response broken off mid-body.
        for c in calls:
            c.join(30)
            if c.error:
                self.assertIn("reset=after", c.path)
                self.assertIsInstance(c.error, (EOFError, ConnectionResetError))
                continue
            status, h = c.result[0], c.result[1]
            self.assertIn((status, h.get("x-bulwark-reason")),
                          ((502, "upstream-reset"), (503, "overloaded")))
        self.assert_settled()

    def test_route_timeout_while_in_flight_and_queued(self):
        self.proxy = start(self.backend.address, limit=1, queue=5, timeout="5s",
                           route_timeout="300ms")
        calls = [Call(self.proxy.port, "/t?delay=2000") for _ in range(3)]
        results = [c.get()[0] for c in calls]
        self.assertEqual(sorted(results), [504, 504, 504])
        self.assert_settled()

    def test_retries_and_5xx(self):
        retry = "        retry: { attempts: 3, on: [5xx, reset, connect-failure], backoff: { base: 5ms, max: 10ms } }"
        self.proxy = start(self.backend.address, limit=2, queue=10, timeout="3s", route_extra=retry)
        calls = [Call(self.proxy.port, "/f?status=503&delay=50") for _ in range(6)]
        calls += [Call(self.proxy.port, "/r?reset=before&delay=30") for _ in range(3)]
        for c in calls:
            self.assertIn(c.get()[0], (502, 503))
        self.assert_settled()

    def test_a_retry_that_could_not_go_anyway_is_not_counted_as_shed(self):
        # The upstream's Retry-After (5 s) never fits in the route timeout (2 s): no retry is
        # made, so a waiting request does not make it a "retry not made" in bulwark_shed_total.
        retry = "        retry: { attempts: 3, on: [5xx], backoff: { base: 10ms, max: 20ms } }"
        self.proxy = start(self.backend.address, limit=1, queue=5, timeout="3s",
                           route_extra=retry, route_timeout="2s")
        failing = Call(self.proxy.port, "/fail?status=503&delay=300&retry_after=5")
        wait_for(lambda: status_of(self.proxy)["in_flight"] == 1, what="one in flight")
        waiting = Call(self.proxy.port, "/w")
        wait_for(lambda: status_of(self.proxy)["queued"] == 1, what="one queued")
        self.assertEqual(failing.get()[0], 503)
        self.assertEqual(waiting.get()[0], 200)
        self.assertEqual(self.proxy.metric("bulwark_shed_total", upstream="app"), 0)
        self.assert_settled()

    def test_dead_endpoint(self):
        dead = free_port()
        self.proxy = start("127.0.0.1:%d" % dead, limit=1, queue=5)
        calls = [Call(self.proxy.port, "/d") for _ in range(5)]
        for c in calls:
            self.assertIn(c.get()[0], (502, 503))
        wait_for(lambda: status_of(self.proxy)["in_flight"] == 0 and
                 status_of(self.proxy)["queued"] == 0, what="settled")
        self.assertEqual(self.proxy.metric("bulwark_inflight_requests"), 0)

    def test_websocket_closed_by_client_and_queued_upgrade(self):
        self.proxy = start(self.backend.address, limit=1, queue=5)
        holders = self.hold(500)
        s = connect(self.proxy.port)
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        wait_for(lambda: status_of(self.proxy)["queued"] == 1, what="upgrade queued")
        _, status, _ = Reader(s).read_head()
        self.assertEqual(status, 101)
        self.assertEqual(holders[0].get()[0], 200)
        wait_for(lambda: status_of(self.proxy)["in_flight"] == 0, what="tunnel gives back its unit")
        rst_close(s)
        self.assert_settled()


    def test_bulkhead_wait_behind_the_shed_unit(self):
        # Admitted by load shedding (limit 3), then waiting for the bulkhead (1 at a time,
        # 200 ms of pending wait): the bulkhead's 503 gives the unit back.
        limits = "    limits: { max_requests: 1, max_pending: 5, pending_timeout: 200ms }"
        self.proxy = start(self.backend.address, limit=3, queue=5, upstream_extra=limits)
        calls = [Call(self.proxy.port, "/b%d?delay=600" % i) for i in range(4)]
        statuses = sorted(c.get()[0] for c in calls)
        self.assertEqual(statuses.count(200), 1, statuses)
        self.assertEqual(statuses.count(503), 3, statuses)
        self.assert_settled()

    def test_rate_limited_and_shed_on_one_keep_alive_connection(self):
        rl = "        rate_limit: { rate: 5/s, burst: 2 }"
        self.proxy = start(self.backend.address, limit=1, queue=0, route_extra=rl)
        holders = self.hold(400)
        s = connect(self.proxy.port)
        r = Reader(s)
        seen = []
        for i in range(4):
            s.sendall(b"GET /k%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            status, h, _ = r.read_response()
            seen.append((status, h.get("x-bulwark-reason")))
        s.close()
        self.assertEqual(seen[0], (503, "overloaded"))
        self.assertIn(seen[-1], [(429, "rate-limited")])
        self.assertEqual(holders[0].get()[0], 200)
        time.sleep(1.0)  # the rate limit refills for the final check
        self.assert_settled()

    def test_http10_and_head_requests_shed(self):
        self.proxy = start(self.backend.address, limit=1, queue=0)
        holders = self.hold(400)
        status, h, body = request(self.proxy.port, "GET", "/old", version="1.0")
        self.assertEqual((status, h[":version"], h.get("x-bulwark-reason")),
                         (503, "HTTP/1.0", "overloaded"))
        status, h, body = request(self.proxy.port, "HEAD", "/head")
        self.assertEqual((status, body), (503, b""))
        self.assertEqual(holders[0].get()[0], 200)
        self.assert_settled()

class Priorities(Base):
    def shed_under(self, value):
        """The priority the proxy gives a request whose header has `value`: its shed counter."""
        holders = self.hold(300)
        raw = b"GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + value + b"\r\n\r\n"
        s = connect(self.proxy.port)
        s.sendall(raw)
        status, _, _ = Reader(s).read_response()
        s.close()
        holders[0].get()
        return status

    def test_header_name_case_and_value_whitespace(self):
        self.proxy = start(self.backend.address, limit=1, queue=0)
        before = {p: 0 for p in ("critical", "normal", "sheddable")}
        cases = [(b"X-PRIORITY: Sheddable", "sheddable"),
                 (b"x-priority:   CRITICAL   ", "critical"),
                 (b"x-priority:\tsheddable\t", "sheddable"),
                 (b"x-priority: critical, sheddable", "normal"),
                 (b"x-priority: urgent", "normal"),
                 (b"x-priority:", "normal"),
                 # Two field lines mean what their comma-joined value means (RFC 9110 5.3):
                 # "critical, sheddable" names no priority, whichever line comes first.
                 (b"x-priority: sheddable\r\nx-priority: critical", "normal"),
                 (b"x-priority: critical\r\nX-Priority: sheddable", "normal")]
        for value, expect in cases:
            self.assertEqual(self.shed_under(value), 503)
            before[expect] += 1
            for p, n in before.items():
                self.assertEqual(self.proxy.metric("bulwark_shed_total", upstream="app", priority=p),
                                 n, "%r counted under %s" % (value, p))
        self.assert_settled()

    def test_critical_reserve_zero_and_high(self):
        for reserve in ("0%", "99%"):
            with self.subTest(reserve=reserve):
                self.proxy = start(self.backend.address, limit=4, queue=0,
                                   shed_extra="      critical_reserve: %s" % reserve)
                # Critical traffic present: normal requests keep what the reserve leaves.
                crit = Call(self.proxy.port, "/c?delay=400", {"x-priority": "critical"})
                wait_for(lambda: status_of(self.proxy)["critical_in_flight"] == 1, what="critical")
                normal = [Call(self.proxy.port, "/n?delay=400") for _ in range(4)]
                statuses = sorted(c.get()[0] for c in normal)
                self.assertEqual(crit.get()[0], 200)
                want_ok = 3 if reserve == "0%" else 1  # 99% of 4 rounds up to 4, capped at 3
                self.assertEqual(statuses.count(200), want_ok, statuses)
                self.assert_settled()
                self.proxy.stop()
                self.proxy = None

    def test_critical_takes_a_free_reserved_unit_past_waiting_normal_requests(self):
        # limit 4, reserve 25%: one unit kept for critical traffic while it is present.
        self.proxy = start(self.backend.address, limit=4, queue=10, timeout="3s",
                           shed_extra="      critical_reserve: 25%")
        self.assertEqual(request(self.proxy.port, "GET", "/c0",
                                 headers={"x-priority": "critical"})[0], 200)
        holders = self.hold(1500, n=3)
        # A fourth normal request waits for the reserved unit (critical traffic is present).
        waiting = Call(self.proxy.port, "/n?delay=10")
        wait_for(lambda: status_of(self.proxy)["queued"] == 1, what="normal waits")
        # A critical request finds its reserved unit free: it goes at once, it does not queue
        # behind the normal request that may not take that unit.
        t = time.time()
        status, _, _ = request(self.proxy.port, "GET", "/c1", headers={"x-priority": "critical"})
        took = time.time() - t
        self.assertEqual(status, 200)
        self.assertLess(took, 0.4, "the critical request waited %.2f s for a free unit" % took)
        for c in holders:
            self.assertEqual(c.get()[0], 200)
        self.assertIn(waiting.get()[0], (200, 503))
        self.assert_settled()

    def test_a_request_waiting_for_the_reserve_goes_when_critical_traffic_stops(self):
        # limit 2, reserve 50%: one unit kept for critical traffic for 1 s after the last
        # critical request. A normal request that waits for it goes once that second is over,
        # not only when the other unit is given back (2.5 s later).
        self.proxy = start(self.backend.address, limit=2, queue=5, timeout="3s",
                           shed_extra="      critical_reserve: 50%")
        self.assertEqual(request(self.proxy.port, "GET", "/c",
                                 headers={"x-priority": "critical"})[0], 200)
        critical_at = time.time()
        holders = self.hold(2500)
        status, _, _ = request(self.proxy.port, "GET", "/n")
        self.assertEqual(status, 200)
        waited = time.time() - critical_at
        self.assertLess(waited, 1.6, "went %.2f s after the last critical request" % waited)
        self.assertEqual(holders[0].get()[0], 200)
        self.assert_settled()

    def test_queue_size_zero_sheds_at_once(self):
        self.proxy = start(self.backend.address, limit=1, queue=0, timeout="5s")
        holders = self.hold(500)
        t = time.time()
        status, h, _ = request(self.proxy.port, "GET", "/x", headers={"x-priority": "critical"})
        self.assertEqual((status, h.get("x-bulwark-reason")), (503, "overloaded"))
        self.assertLess(time.time() - t, 0.3)
        self.assertEqual(holders[0].get()[0], 200)
        self.assert_settled()

    def test_shadow_mode_logs_overloaded_shadow_and_releases(self):
        self.proxy = start(self.backend.address, limit=1, queue=0, enforce="false")
        calls = [Call(self.proxy.port, "/s?delay=300") for _ in range(3)]
        wait_for(lambda: status_of(self.proxy)["in_flight"] == 3, what="all three in flight")
        self.assertEqual([c.get()[0] for c in calls], [200] * 3)
        entries = self.proxy.access_log(until=lambda e: len(e) >= 3)
        self.assertEqual(sorted(e.get("reason", "") for e in entries).count("overloaded-shadow"), 2)
        self.assert_settled()


class TwoWorkers(Base):
    testd_args = ("--capacity", "1000", "--service-ms", "40")

    def test_limit_never_exceeded_across_workers(self):
        self.proxy = start(self.backend.address, limit=3, queue=200, timeout="5s", workers=2)
        seen = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                _, _, body = request(self.backend.port, "GET", "/__capacity")
                seen.append(json.loads(body)["busy"])
                time.sleep(0.003)
        watcher = threading.Thread(target=watch)
        watcher.start()
        calls = [Call(self.proxy.port, "/w%d" % i,
                      {"x-priority": ("critical", "normal", "sheddable")[i % 3]})
                 for i in range(60)]
        results = [c.get() for c in calls]
        stop.set()
        watcher.join()
        self.assertTrue(all(r[0] in (200, 503) for r in results))
        self.assertGreaterEqual(sum(1 for r in results if r[0] == 200), 30)
        self.assertLessEqual(max(seen), 3, "busy at the backend: max %d" % max(seen))
        self.assertEqual(max(seen) >= 2, True)
        self.assert_settled()


    # Found by this review: the queue's size is counted for the whole process, but a request
    # that found it full could only evict a lower-priority request from its own worker's
    # queue, so a critical request landing on a worker without sheddable waiters was shed
    # while sheddable requests waited on the other worker. Fixed by evictions owed across
    # workers (LoadShedder::owe_eviction, paid from the other worker's gate timer).
    def test_critical_evicts_sheddable_waiting_on_the_other_worker(self):
        # The queue (size 16) is one for the whole process; sheddable requests fill it, spread
        # over the two workers by the kernel (SO_REUSEPORT). Sixteen critical requests must
        # each take the place of one of them, whichever worker they land on: none of them is
        # shed while a sheddable request still waits. (Three rounds: the test passes by luck
        # only when both spreads come out equal each time, about 0.14^3.)
        # A fresh proxy per round: once requests were shed, the queue stands for an interval
        # and sheddable requests are refused at once instead of queueing.
        for _ in range(3):
            if self.proxy:
                self.proxy.stop()
            self.proxy = start(self.backend.address, limit=1, queue=16, timeout="5s", workers=2)
            holders = self.hold(800)
            sheddable = [Call(self.proxy.port, "/s%d" % i, {"x-priority": "sheddable"})
                         for i in range(16)]
            wait_for(lambda: status_of(self.proxy)["queued"] == 16, what="queue full")
            critical = [Call(self.proxy.port, "/c%d" % i, {"x-priority": "critical"})
                        for i in range(16)]
            results = [c.get()[0] for c in critical]
            self.assertEqual(results, [200] * 16, "critical shed while sheddable requests waited")
            self.assertEqual(sorted(c.get()[0] for c in sheddable), [503] * 16)
            self.assertEqual(holders[0].get()[0], 200)
            self.assert_settled()


ADAPTIVE = "      algorithm: gradient2\n"


class Adaptive(Base):
    """gradient2 (initial limit 40, min 2) in front of a healthy backend, 10 clients in a loop."""

    def run_with_attacker(self, attack_path):
        self.proxy = Bulwark(TEMPLATE.replace("algorithm: fixed", "algorithm: gradient2")
                             .replace("min_limit: 1", "min_limit: 2\n      max_limit: 200"),
                             upstream=self.backend.address, limit=40, queue=100, timeout="50ms",
                             workers=1, enforce="true", route_extra="", upstream_extra="",
                             shed_extra="", route_timeout="10s", drain="5s")
        stop = threading.Event()
        counts = {}
        lock = threading.Lock()

        def legit():
            while not stop.is_set():
                st = request(self.proxy.port, "GET", "/ok?delay=20")[0]
                with lock:
                    counts[st] = counts.get(st, 0) + 1
        clients = [threading.Thread(target=legit) for _ in range(10)]
        for t in clients:
            t.start()
        try:
            time.sleep(1.0)
            with lock:
                counts.clear()
            deadline = time.time() + 3.0
            while time.time() < deadline:  # one request at a time, each failing at once
                request(self.proxy.port, "GET", attack_path)
            limit = status_of(self.proxy)["limit"]
        finally:
            stop.set()
            for t in clients:
                t.join(20)
        return limit, counts

    def test_one_client_failing_fast_with_500_does_not_cut_the_limit(self):
        limit, counts = self.run_with_attacker("/bad?status=500")
        total = sum(counts.values())
        self.assertLess(counts.get(503, 0), 0.02 * total,
                        "healthy traffic shed (limit %d): %r" % (limit, counts))
        self.assertGreaterEqual(limit, 10, counts)
        self.assert_settled()

    def test_503_still_signals_overload(self):
        limit, _ = self.run_with_attacker("/busy?status=503")
        self.assertLess(limit, 20)

class Drain(Base):
    def test_sigterm_with_requests_queued(self):
        self.proxy = start(self.backend.address, limit=1, queue=10, timeout="3s")
        holders = self.hold(500)
        queued = [Call(self.proxy.port, "/q%d?delay=50" % i) for i in range(4)]
        wait_for(lambda: status_of(self.proxy)["queued"] == 4, what="four queued")
        self.proxy.signal(signal.SIGTERM)
        for c in queued:
            status, h, _, _ = c.get()
            self.assertIn(status, (200, 503))
            if status == 503:
                self.assertEqual(h.get("x-bulwark-reason"), "overloaded")
        self.assertEqual(holders[0].get()[0], 200)
        self.assertEqual(self.proxy.wait(15), 0, self.proxy.stderr_text())


    def test_drain_timeout_with_requests_queued_exits_cleanly(self):
        # The drain ends before the units free up: whatever still waits is closed, and the
        # process exits 0 at once (no queue timer left behind, no crash on the way out).
        self.proxy = start(self.backend.address, limit=1, queue=10, timeout="10s", drain="500ms")
        holders = self.hold(3000)
        queued = [Call(self.proxy.port, "/q%d" % i, {"x-priority": p})
                  for i, p in enumerate(("critical", "normal", "sheddable"))]
        wait_for(lambda: status_of(self.proxy)["queued"] == 3, what="three queued")
        t = time.time()
        self.proxy.signal(signal.SIGTERM)
        self.assertEqual(self.proxy.wait(15), 0, self.proxy.stderr_text())
        self.assertLess(time.time() - t, 2.5)
        for c in queued + holders:
            c.join(5)
            self.assertFalse(c.is_alive())

class ConfigErrors(unittest.TestCase):
    def check(self, block):
        d = tempfile.mkdtemp(prefix="bulwark-review-")
        path = os.path.join(d, "c.yaml")
        with open(path, "w") as f:
            f.write("listeners:\n  - name: l\n    listen: 127.0.0.1:1\n    routes:\n"
                    "      - name: r\n        match: { prefix: / }\n        upstream: app\n"
                    "upstreams:\n  - name: app\n    endpoints: [127.0.0.1:2]\n"
                    "    load_shedding:\n" + block)
        p = subprocess.run([BULWARK, "--check", "-c", path], capture_output=True, text=True,
                           timeout=10)
        return p.returncode, p.stdout + p.stderr, path

    def test_every_error_with_its_position(self):
        code, out, path = self.check(
            "      algorithm: magic\n"
            "      initial_limit: 0\n"
            "      max_limit: -3\n"
            "      queue: { size: -1, timeout: soon }\n"
            "      critical_reserve: 150%\n"
            "      enforce: maybe\n")
        self.assertNotEqual(code, 0)
        for line in (12, 13, 14, 15, 16, 17):
            self.assertIn("%s:%d:" % (path, line), out, out)

    def test_empty_priority_header_is_refused(self):
        code, out, path = self.check("      priority_header: \"\"\n")
        self.assertNotEqual(code, 0, out)
        self.assertIn("%s:12:" % path, out)


    def test_priority_header_must_be_a_field_name(self):
        code, out, path = self.check("      priority_header: \"x priority\"\n")
        self.assertNotEqual(code, 0, out)
        self.assertIn("%s:12:" % path, out)
        self.assertIn("priority_header", out)

    def test_queue_not_a_mapping_is_one_error_with_its_position(self):
        code, out, path = self.check("      queue: 5\n      min_limit: 0\n")
        self.assertNotEqual(code, 0, out)
        lines = [l for l in out.splitlines() if l.strip()]
        # queue and min_limit, each once, each at its line; no position-less follow-ups
        # ("queue.size: expected a single value" at 0:0).
        self.assertEqual(len(lines), 2, out)
        self.assertNotIn(":0:0:", out)
        self.assertTrue(any(l.startswith("%s:12:" % path) and "queue" in l for l in lines), out)
        self.assertTrue(any(l.startswith("%s:13:" % path) and "min_limit" in l for l in lines), out)

if __name__ == "__main__":
    unittest.main()
