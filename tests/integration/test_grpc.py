"""gRPC end to end through Bulwark, with real grpcio peers (grpc_peers.py): a grpcio client speaks
h2c to a listener with `protocols: [http1, h2c]`, Bulwark speaks HTTP/2 (`protocol: h2`) to a
grpcio server, multiplexing streams.

What is checked: unary calls (0 B, 1 KiB, 1 MiB; request metadata in, trailing metadata out),
server, client and bidirectional streaming (bidi relayed message by message, not buffered),
retries on grpc-status UNAVAILABLE (`retry.on: [unavailable]`, `methods: all` since gRPC is
POST) and no retry otherwise, Bulwark's own replies as gRPC errors (rate limited, circuit open,
connect failure, no route, route timeout) with x-bulwark-reason, the client's deadline, and the
metrics (bulwark_http2_streams{side="upstream"}, bulwark_requests_total).

Needs Debian's python3-grpcio (it imports only under /usr/bin/python3); without it every test
is skipped, saying so.
"""
import time
import unittest

from harness import Bulwark, free_port
from test_tls_upstream import sample
from tls_backend import pki
from grpc_peers import (command, EchoClient, EchoServer, Feeder, grpc, metadata_value,
                        NEEDS_GRPC, next_with_timeout, pattern, rpc_error)

PREFIX = "/bulwark.test.Echo/"

# Routes are chosen by the request metadata `x-route` (match.headers); `main` takes the rest of
# the Echo service, and nothing matches another service (no-route).
CONFIG = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    protocols: [http1, h2c]
    routes:
      - name: retry
        match: {{ prefix: {prefix}, headers: {{ x-route: retry }} }}
        upstream: grpc
        retry: {{ attempts: 3, on: [unavailable], backoff: {{ base: 5ms, max: 20ms }}, methods: all }}
      - name: retry-other
        match: {{ prefix: {prefix}, headers: {{ x-route: retry-other }} }}
        upstream: grpc
        retry: {{ attempts: 3, on: [connect-failure, reset], backoff: {{ base: 5ms, max: 20ms }}, methods: all }}
      - name: limited
        match: {{ prefix: {prefix}, headers: {{ x-route: limited }} }}
        upstream: grpc
        rate_limit: {{ rate: 1/s, burst: 1, key: route }}
      - name: short
        match: {{ prefix: {prefix}, headers: {{ x-route: short }} }}
        upstream: grpc
        timeout: 300ms
      - name: broken
        match: {{ prefix: {prefix}, headers: {{ x-route: broken }} }}
        upstream: broken
      - name: refused
        match: {{ prefix: {prefix}, headers: {{ x-route: refused }} }}
        upstream: refused
      - name: judged
        match: {{ prefix: {prefix}, headers: {{ x-route: judged }} }}
        upstream: judged
      - name: judged-4xx
        match: {{ prefix: {prefix}, headers: {{ x-route: judged-4xx }} }}
        upstream: judged-4xx
      - name: main
        match: {{ prefix: {prefix} }}
        upstream: grpc
upstreams:
  - name: grpc
    protocol: h2
    endpoints: [127.0.0.1:{grpc_port}]
  - name: broken
    protocol: h2
    endpoints: [127.0.0.1:{dead_port}]
    circuit_breaker: {{ consecutive_failures: 2, open_for: 30s }}
  - name: refused
    protocol: h2
    endpoints: [127.0.0.1:{dead_port2}]
  - name: judged
    protocol: h2
    endpoints: [127.0.0.1:{grpc_port}]
    circuit_breaker: {{ consecutive_failures: 2, open_for: 30s }}
  - name: judged-4xx
    protocol: h2
    endpoints: [127.0.0.1:{grpc_port}]
    circuit_breaker: {{ consecutive_failures: 2, open_for: 30s }}
"""


def start_bulwark(template=CONFIG, **values):
    try:
        return Bulwark(template, **values)
    except RuntimeError as e:
        raise AssertionError("bulwark refused the gRPC config (upstream `protocol: h2`, "
                             "`retry.on: [unavailable]`): %s" % e) from None


def route(name):
    return [("x-route", name)]


@NEEDS_GRPC
class GrpcThroughBulwark(unittest.TestCase):
    """One Bulwark and one grpcio server for the class (counters reset before each test); each
    test has its own client channel (its own HTTP/2 connection to Bulwark)."""

    @classmethod
    def setUpClass(cls):
        cls.server = EchoServer(workers=64)
        try:
            cls.proxy = start_bulwark(prefix=PREFIX, grpc_port=cls.server.port,
                                      dead_port=free_port(), dead_port2=free_port())
        except BaseException:
            cls.server.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.proxy.stop()
        cls.server.stop()

    def setUp(self):
        self.server.reset()
        self.client = EchoClient(self.proxy.port)

    def tearDown(self):
        self.client.close()

    def metric(self, metric_name, /, **labels):
        return sample(self.proxy.metrics(), metric_name, **labels)

    def metric_eventually(self, expected, metric_name, /, **labels):
        """The metric once it equals `expected` (counts land just after the reply), or its value
        after 1 s."""
        deadline = time.monotonic() + 1.0
        value = self.metric(metric_name, **labels)
        while value != expected and time.monotonic() < deadline:
            time.sleep(0.02)
            value = self.metric(metric_name, **labels)
        return value

    def requests_total(self, route_name):
        return self.metric("bulwark_requests_total", listener="inbound", route=route_name) or 0

    def settled_requests_total(self, route_name):
        """requests_total once it has held still for 100 ms (counts land just after replies)."""
        last = self.requests_total(route_name)
        while True:
            time.sleep(0.1)
            now = self.requests_total(route_name)
            if now == last:
                return now
            last = now

    def assert_local_reply(self, error, code, reason):
        self.assertIsNotNone(error, "the call succeeded; expected %s (%s)" % (code, reason))
        self.assertEqual(error.code(), code, "details %r, trailers %r" % (error.details(), error.trailing_metadata()))
        self.assertEqual(metadata_value(error, "x-bulwark-reason"), reason,
                         "initial %r, trailing %r" % (error.initial_metadata(), error.trailing_metadata()))

    # --- unary ------------------------------------------------------------------------------

    def test_unary_payload_sizes(self):
        for size in (0, 1024, 1 << 20):
            with self.subTest(size=size):
                payload = pattern(size)
                reply, call = self.client.unary.with_call(payload, timeout=10)
                self.assertEqual(call.code(), grpc.StatusCode.OK)
                self.assertEqual(len(reply), size)
                self.assertEqual(reply, payload)
        self.assertEqual(self.server.calls["Unary"], 3)

    def test_unary_large_reply_to_small_request(self):
        reply = self.client.unary(command(size=1 << 20), timeout=10)
        self.assertEqual(reply, pattern(1 << 20))

    def test_metadata_in_and_trailing_metadata_out(self):
        reply, call = self.client.unary.with_call(
            command(b"payload", trailer=["x-result:done", "x-count:7"]), timeout=10,
            metadata=[("x-test-hello", "world"), ("x-test-n", "42")])
        self.assertEqual(reply, b"payload")
        seen = self.server.last_metadata["Unary"]
        self.assertEqual((seen.get("x-test-hello"), seen.get("x-test-n")), ("world", "42"), seen)
        trailers = dict(call.trailing_metadata())
        self.assertEqual(trailers.get("x-result"), "done", trailers)
        self.assertEqual(trailers.get("x-count"), "7", trailers)
        self.assertEqual(trailers.get("x-echo-hello"), "world", trailers)
        self.assertEqual(trailers.get("x-echo-n"), "42", trailers)

    def test_concurrent_calls_on_one_connection(self):
        futures = [self.client.unary.future(command(b"%d" % i, sleep=200), timeout=10) for i in range(20)]
        start = time.monotonic()
        replies = [f.result() for f in futures]
        elapsed = time.monotonic() - start
        self.assertEqual(replies, [b"%d" % i for i in range(20)])
        self.assertEqual(self.server.calls["Unary"], 20)
        # 20 calls of 200 ms each, multiplexed: together well under the 4 s they take in series.
        self.assertLess(elapsed, 2.0, "20 concurrent 200 ms calls took %.2f s" % elapsed)
        # Multiplexed upstream: the 20 streams share one HTTP/2 connection to the server.
        self.assertEqual(len(self.server.peers["Unary"]), 1, self.server.peers["Unary"])

    def test_more_calls_than_one_connection_takes(self):
        """150 calls in flight, above `http2.max_concurrent_streams` (100 by default): Bulwark
        opens a second upstream connection rather than failing or serialising them."""
        clients = [EchoClient(self.proxy.port) for _ in range(2)]  # the listener allows 100 streams each
        try:
            futures = [clients[i % 2].unary.future(command(b"%d" % i, sleep=300), timeout=20)
                       for i in range(150)]
            replies = [f.result() for f in futures]
        finally:
            for c in clients:
                c.close()
        self.assertEqual(replies, [b"%d" % i for i in range(150)])
        self.assertEqual(self.server.calls["Unary"], 150)
        self.assertIn(len(self.server.peers["Unary"]), (2, 3), self.server.peers["Unary"])

    # --- streaming --------------------------------------------------------------------------

    def test_server_streaming(self):
        replies = list(self.client.server_stream(b"100", timeout=10))
        self.assertEqual(replies, [str(i).encode() for i in range(100)])
        big = list(self.client.server_stream(b"100:16384", timeout=10))  # 1.6 MiB: flow control
        self.assertEqual(len(big), 100)
        self.assertEqual([len(m) for m in big], [16384] * 100)
        self.assertEqual(big[99][:3], b"99.")
        self.assertEqual(self.server.calls["ServerStream"], 2)

    def test_client_streaming(self):
        messages = [bytes([i % 256]) * (i * 37) for i in range(100)]
        reply = self.client.client_stream(iter(messages), timeout=10)
        self.assertEqual(len(reply), sum(len(m) for m in messages))
        self.assertEqual(reply, b"".join(messages))
        self.assertEqual(self.server.calls["ClientStream"], 1)

    def test_bidi_both_ways_at_once(self):
        """8 MiB each way at once (256 messages of 32 KiB sent without waiting for echoes): flow
        control on both legs must not deadlock."""
        messages = [bytes([i]) * 32768 for i in range(256)]
        echoes = list(self.client.bidi(iter(messages), timeout=30))
        self.assertEqual(len(echoes), 256)
        self.assertTrue(echoes == messages, "echoes differ from what was sent")

    def test_bidi_each_message_relayed_before_the_next_is_sent(self):
        feeder = Feeder()
        replies = self.client.bidi(feeder, timeout=20)
        try:
            for i in range(20):
                message = b"ping %d " % i + b"x" * (i * 100)
                feeder.put(message)
                arrived, echo = next_with_timeout(replies, 3.0)
                self.assertTrue(arrived, "message %d (%d bytes) was not echoed back within 3 s: "
                                "relayed only when more data or the end of the stream comes?"
                                % (i, len(message)))
                self.assertEqual(echo, message)
        finally:
            feeder.end()
        self.assertEqual(list(replies), [])
        self.assertEqual(replies.code(), grpc.StatusCode.OK)
        ins = [m for _, d, m in self.server.bidi_log if d == "in"]
        self.assertEqual(len(ins), 20)

    # --- retries ----------------------------------------------------------------------------

    def test_retry_on_unavailable_succeeds_on_the_third_attempt(self):
        before = self.metric("bulwark_retries_total", route="retry", reason="unavailable") or 0
        reply, call = self.client.unary.with_call(
            command(b"third time lucky", key="r3", fail="UNAVAILABLE*2"), timeout=10,
            metadata=route("retry"))
        self.assertEqual(reply, b"third time lucky")
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        self.assertEqual(self.server.key_calls["r3"], 3, "attempts that reached the server")
        self.assertEqual(metadata_value(call, "x-bulwark-attempts"), "3",
                         "initial %r, trailing %r" % (call.initial_metadata(), call.trailing_metadata()))
        retries = self.metric_eventually(before + 2, "bulwark_retries_total", route="retry",
                                         reason="unavailable") or 0
        self.assertEqual(retries - before, 2, "bulwark_retries_total{route=\"retry\",reason=\"unavailable\"}")

    def test_retry_gives_up_after_attempts(self):
        error, _ = rpc_error(self.client.unary, command(key="r5", fail="UNAVAILABLE*5"), timeout=10,
                             metadata=route("retry"))
        self.assertIsNotNone(error)
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(self.server.key_calls["r5"], 3, "attempts: 3")
        # The upstream's own status reaches the client, not a reply of Bulwark's.
        self.assertIn("failing as told (3 of 5)", error.details())
        self.assertIsNone(metadata_value(error, "x-bulwark-reason"))
        self.assertEqual(metadata_value(error, "x-bulwark-attempts"), "3")

    def test_unavailable_not_retried_when_not_listed(self):
        error, _ = rpc_error(self.client.unary, command(key="nr", fail="UNAVAILABLE*2"), timeout=10,
                             metadata=route("retry-other"))
        self.assertIsNotNone(error)
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(self.server.key_calls["nr"], 1)

    def test_failure_after_messages_is_not_retried(self):
        """reference.md, retry.on: a gRPC failure after response messages has reached the client
        and is not retried."""
        replies = self.client.server_stream(b"3:0:UNAVAILABLE", timeout=10, metadata=route("retry"))
        got = []
        with self.assertRaises(grpc.RpcError) as raised:
            for message in replies:
                got.append(message)
        self.assertEqual(got, [b"0", b"1", b"2"])
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(raised.exception.details(), "failing after 3 messages")
        self.assertEqual(self.server.calls["ServerStream"], 1)

    def test_client_stream_replayed_whole(self):
        """A streamed request (under retry.max_body_bytes) failed with UNAVAILABLE twice is
        replayed: each attempt receives every message."""
        parts = [b"part%d-" % i * 50 for i in range(20)]
        reply, call = self.client.client_stream.with_call(
            iter([b"!key=cs fail=UNAVAILABLE*2"] + parts), timeout=10, metadata=route("retry"))
        self.assertEqual(reply, b"".join(parts))
        self.assertEqual(self.server.received["cs"], [b"".join(parts)] * 3)
        self.assertEqual(metadata_value(call, "x-bulwark-attempts"), "3")

    def test_client_stream_failed_before_its_end(self):
        """The server fails the call (trailers-only UNAVAILABLE) after the first message while
        the client is still streaming: whether Bulwark replays it or not, the client never gets
        anything but OK with the whole stream or UNAVAILABLE, and it does not hang."""
        def slow():
            yield b"!key=early fail=UNAVAILABLE*2 early=1"
            for i in range(5):
                time.sleep(0.05)
                yield b"s%d" % i
        start = time.monotonic()
        try:
            reply = self.client.client_stream(slow(), timeout=10, metadata=route("retry"))
        except grpc.RpcError as error:
            self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE, error.details())
        else:
            self.assertEqual(reply, b"s0s1s2s3s4")
            self.assertEqual(self.server.key_calls["early"], 3)
        self.assertLess(time.monotonic() - start, 3.0)

    def test_large_request_not_replayed(self):
        """retry.max_body_bytes (64 KiB): a 100 KiB request is never replayed."""
        error, _ = rpc_error(self.client.unary, command(b"x" * 100 * 1024, key="big", fail="UNAVAILABLE*2"),
                             timeout=10, metadata=route("retry"))
        self.assertIsNotNone(error)
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(self.server.key_calls["big"], 1)

    def test_status_not_listed_is_not_retried(self):
        error, _ = rpc_error(self.client.unary, command(key="ia", fail="INVALID_ARGUMENT*2"),
                             timeout=10, metadata=route("retry"))
        self.assertIsNotNone(error)
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("failing as told (1 of 2)", error.details())
        self.assertEqual(self.server.key_calls["ia"], 1)

    # --- Bulwark's own replies as gRPC errors -----------------------------------------------

    def test_rate_limited_is_resource_exhausted(self):
        codes = []
        for _ in range(3):
            error, _ = rpc_error(self.client.unary, b"x", timeout=10, metadata=route("limited"))
            codes.append(error.code() if error else grpc.StatusCode.OK)
            if error:
                last = error
        self.assertEqual(codes[0], grpc.StatusCode.OK, codes)
        self.assertEqual(codes[1:], [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2, codes)
        self.assert_local_reply(last, grpc.StatusCode.RESOURCE_EXHAUSTED, "rate-limited")
        self.assertEqual(self.server.calls["Unary"], 1, "refused calls must not reach the server")

    def test_connect_failure_then_circuit_open_are_unavailable(self):
        for i in range(2):
            error, _ = rpc_error(self.client.unary, b"x", timeout=10, metadata=route("broken"))
            self.assert_local_reply(error, grpc.StatusCode.UNAVAILABLE, "upstream-connect-failure")
        error, elapsed = rpc_error(self.client.unary, b"x", timeout=10, metadata=route("broken"))
        self.assert_local_reply(error, grpc.StatusCode.UNAVAILABLE, "circuit-open")
        self.assertLess(elapsed, 0.5)
        state = self.metric("bulwark_circuit_state", upstream="broken", state="open")
        self.assertEqual(state, 1.0)

    def test_upstream_connect_failure_is_unavailable(self):
        error, _ = rpc_error(self.client.unary, b"x", timeout=10, metadata=route("refused"))
        self.assert_local_reply(error, grpc.StatusCode.UNAVAILABLE, "upstream-connect-failure")

    def test_no_route_is_unimplemented(self):
        # reference.md, "HTTP/2 clients": no-route is grpc-status 12 UNIMPLEMENTED.
        error, _ = rpc_error(self.client.method("/other.Service/Call"), b"x", timeout=10)
        self.assert_local_reply(error, grpc.StatusCode.UNIMPLEMENTED, "no-route")
        self.assertEqual(sum(self.server.calls.values()), 0)

    def test_route_timeout_is_deadline_exceeded(self):
        """DEADLINE_EXCEEDED after the route's 300 ms: from Bulwark (upstream-timeout), or from
        the server itself, which is told that deadline (grpc-timeout) and may give up first."""
        error, elapsed = rpc_error(self.client.unary, command(key="rt", sleep=2000), timeout=10,
                                   metadata=route("short"))
        self.assertIsNotNone(error)
        self.assertEqual(error.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertIn(metadata_value(error, "x-bulwark-reason"), ("upstream-timeout", None))
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 1.0, "route timeout 300ms, answered after %.2f s" % elapsed)

    def test_server_is_told_the_deadline_bulwark_enforces(self):
        """The upstream's grpc-timeout is the route timeout (300 ms) when the client's deadline
        is longer (10 s), and the client's own when that is shorter."""
        self.client.unary(command(key="td"), timeout=10, metadata=route("short"))
        seen = self.server.time_remaining.get("td")
        self.assertIsNotNone(seen)
        self.assertLessEqual(seen, 0.31, "the server saw %.3f s left" % seen)
        self.assertGreater(seen, 0.1)
        self.client.unary(command(key="tc"), timeout=0.2, metadata=route("short"))
        seen = self.server.time_remaining.get("tc")
        self.assertLessEqual(seen, 0.21, "the server saw %.3f s left" % seen)

    def test_route_timeout_cancels_the_upstream_call(self):
        """Once Bulwark has answered the client, the upstream stream is reset: the server's
        handler sees its call cancelled instead of working on for nobody."""
        rpc_error(self.client.unary, command(key="rc", sleep=2000), timeout=10, metadata=route("short"))
        deadline = time.monotonic() + 1.0
        while self.server.cancelled["rc"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.server.cancelled["rc"], 1,
                         "the server's call ran on after Bulwark's upstream-timeout reply")

    def test_client_cancel_resets_the_upstream_call(self):
        future = self.client.unary.future(command(key="cc", sleep=3000), timeout=10)
        deadline = time.monotonic() + 2.0
        while self.server.key_calls["cc"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(self.server.key_calls["cc"], 1)
        self.assertTrue(future.cancel())
        deadline = time.monotonic() + 1.0
        while self.server.cancelled["cc"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.server.cancelled["cc"], 1, "the server's call ran on after the client cancelled it")

    def test_client_deadline(self):
        """grpc-timeout 300 ms, the server sleeps 2 s: DEADLINE_EXCEEDED well before 2 s, and the
        server's call ends too (Bulwark passed the deadline on, or reset the upstream stream)."""
        error, elapsed = rpc_error(self.client.unary, command(key="dl", sleep=2000), timeout=0.3)
        self.assertIsNotNone(error)
        self.assertEqual(error.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(elapsed, 1.0)
        deadline = time.monotonic() + 1.0
        while self.server.cancelled["dl"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.server.cancelled["dl"], 1,
                         "the server's call ran on after the client's deadline (server saw "
                         "time_remaining %r)" % self.server.time_remaining.get("dl"))

    def test_breaker_counts_grpc_status_failures(self):
        """reference.md, "HTTP/2 clients": breakers judge a gRPC response by its grpc-status's
        HTTP equivalent: UNAVAILABLE is a 503, so two in a row open a `consecutive_failures: 2`
        breaker, and the third call is refused without reaching the server."""
        for i in range(2):
            error, _ = rpc_error(self.client.unary, command(key="br", fail="UNAVAILABLE*100"),
                                 timeout=10, metadata=route("judged"))
            self.assertIsNotNone(error)
            self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertIsNone(metadata_value(error, "x-bulwark-reason"), "call %d: the server's status" % (i + 1))
        error, _ = rpc_error(self.client.unary, command(key="br", fail="UNAVAILABLE*100"),
                             timeout=10, metadata=route("judged"))
        self.assert_local_reply(error, grpc.StatusCode.UNAVAILABLE, "circuit-open")
        self.assertEqual(self.server.key_calls["br"], 2, "calls that reached the server")
        self.assertEqual(self.metric_eventually(2, "bulwark_upstream_requests_total", upstream="judged",
                                                outcome="failure"), 2)

    def test_breaker_ignores_client_error_statuses(self):
        """INVALID_ARGUMENT stands for a 400: breakers do not count it."""
        for i in range(4):
            error, _ = rpc_error(self.client.unary, command(key="b4", fail="INVALID_ARGUMENT*100"),
                                 timeout=10, metadata=route("judged-4xx"))
            self.assertIsNotNone(error)
            self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT, "call %d" % (i + 1))
        self.assertEqual(self.server.key_calls["b4"], 4)
        self.assertEqual(self.metric("bulwark_circuit_state", upstream="judged-4xx", state="closed"), 1)

    # --- metrics ----------------------------------------------------------------------------

    def test_upstream_streams_gauge(self):
        self.assertIsNotNone(self.metric("bulwark_http2_streams", side="upstream", name="grpc"),
                             "no bulwark_http2_streams{side=\"upstream\",name=\"grpc\"} in /metrics")
        self.assertIn("# TYPE bulwark_http2_streams gauge", self.proxy.metrics())
        futures = [self.client.unary.future(command(b"%d" % i, sleep=1000), timeout=10) for i in range(3)]
        deadline, peak = time.monotonic() + 0.8, 0
        while time.monotonic() < deadline and peak < 3:
            peak = max(peak, self.metric("bulwark_http2_streams", side="upstream", name="grpc") or 0)
            time.sleep(0.02)
        self.assertGreaterEqual(peak, 3, "open upstream streams during 3 calls in flight")
        for f in futures:
            f.result()
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and self.metric("bulwark_http2_streams", side="upstream", name="grpc"):
            time.sleep(0.02)
        self.assertEqual(self.metric("bulwark_http2_streams", side="upstream", name="grpc"), 0)

    def test_requests_total_counts_rpcs(self):
        before = self.settled_requests_total("main")
        for i in range(5):
            self.client.unary(b"%d" % i, timeout=10)
        list(self.client.server_stream(b"3", timeout=10))
        self.client.client_stream(iter([b"a", b"b"]), timeout=10)
        self.assertEqual(self.settled_requests_total("main") - before, 7)
        self.assertGreaterEqual(self.metric("bulwark_requests_total", listener="inbound", route="main",
                                            upstream="grpc", code="200") or 0, 7)


RESTART_CONFIG = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    protocols: [http1, h2c]
    routes: [{{ name: main, upstream: grpc, retry: {{ on: [connect-failure, reset, unavailable], methods: all }} }}]
upstreams:
  - name: grpc
    protocol: h2
    endpoints: [127.0.0.1:{grpc_port}]
"""


@NEEDS_GRPC
class GrpcUpstreamRestart(unittest.TestCase):
    """The grpcio server stops (GOAWAY, calls in flight finish) and starts again on its port:
    Bulwark's pooled HTTP/2 connection is dropped and calls go through again."""

    def setUp(self):
        self.server = EchoServer()
        self.addCleanup(lambda: self.server.stop())
        self.proxy = start_bulwark(template=RESTART_CONFIG, grpc_port=self.server.port)
        self.addCleanup(self.proxy.stop)
        self.client = EchoClient(self.proxy.port)
        self.addCleanup(self.client.close)

    def test_graceful_stop_then_restart(self):
        self.assertEqual(self.client.unary(b"before", timeout=10), b"before")
        in_flight = self.client.unary.future(command(b"in flight", sleep=500), timeout=10)
        time.sleep(0.2)
        port = self.server.port
        self.server.stop(grace=2)  # GOAWAY; the call in flight may finish
        self.assertEqual(in_flight.result(), b"in flight")
        error, _ = rpc_error(self.client.unary, b"down", timeout=10)
        self.assertIsNotNone(error, "a call succeeded with the server stopped")
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE)
        self.server = EchoServer(port=port)
        self.assertEqual(self.client.unary(b"after", timeout=10), b"after")
        self.assertEqual(self.server.calls["Unary"], 1)


TLS_CONFIG = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    protocols: [http1, h2c]
    routes: [{{ name: main, upstream: grpc }}]
upstreams:
  - name: grpc
    protocol: h2
    endpoints: [127.0.0.1:{grpc_port}]
    tls: {{ ca: "{ca}", sni: localhost }}
"""


@NEEDS_GRPC
class GrpcToTlsUpstream(unittest.TestCase):
    """`protocol: h2` with `tls`: HTTP/2 chosen by ALPN to a grpcio server serving TLS only."""

    def setUp(self):
        self.server = EchoServer(tls=(pki().server_cert, pki().server_key))
        self.addCleanup(self.server.stop)
        try:
            self.proxy = Bulwark(TLS_CONFIG, grpc_port=self.server.port, ca=pki().ca)
        except RuntimeError as e:
            raise AssertionError("bulwark refused `protocol: h2` with `tls`: %s" % e) from None
        self.addCleanup(self.proxy.stop)
        self.client = EchoClient(self.proxy.port)
        self.addCleanup(self.client.close)

    def test_unary_streaming_and_bidi_over_tls(self):
        self.assertEqual(self.client.unary(pattern(1024), timeout=10), pattern(1024))
        self.assertEqual(self.client.unary(command(size=1 << 20), timeout=10), pattern(1 << 20))
        replies = list(self.client.server_stream(b"100", timeout=10))
        self.assertEqual(replies, [str(i).encode() for i in range(100)])
        feeder = Feeder()
        echoes = self.client.bidi(feeder, timeout=20)
        try:
            for i in range(5):
                feeder.put(b"tls %d" % i)
                arrived, echo = next_with_timeout(echoes, 3.0)
                self.assertTrue(arrived, "bidi message %d not echoed within 3 s" % i)
                self.assertEqual(echo, b"tls %d" % i)
        finally:
            feeder.end()
        self.assertEqual(dict(self.server.calls), {"Unary": 2, "ServerStream": 1, "Bidi": 1})
        handshakes = sample(self.proxy.metrics(), "bulwark_tls_handshakes_total", side="upstream",
                            name="grpc", result="success")
        self.assertGreaterEqual(handshakes or 0, 1)


if __name__ == "__main__":
    unittest.main()
