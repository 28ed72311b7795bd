"""gRPC through Bulwark across its own life events, with real grpcio peers (grpc_peers.py): a
reload that changes the `protocol: h2` upstream while a bidi call is open (the call keeps
flowing on the old upstream's connection, new calls use the new one), and a drain (SIGTERM)
with a call in flight (it finishes, then Bulwark exits 0).

Needs Debian's python3-grpcio (under /usr/bin/python3); skipped without it.
"""
import signal
import time
import unittest

from harness import Bulwark
from grpc_peers import command, EchoClient, EchoServer, Feeder, grpc, NEEDS_GRPC, next_with_timeout

CONFIG = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
drain: {{ timeout: 5s }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    protocols: [http1, h2c]
    routes: [{{ name: main, upstream: grpc }}]
upstreams:
  - name: grpc
    protocol: h2
    endpoints: [127.0.0.1:{grpc_port}]
{extra}"""

CHANGED = "    http2: { ping_interval: 5s }\n"


@NEEDS_GRPC
class GrpcLifecycle(unittest.TestCase):
    def setUp(self):
        self.server = EchoServer()
        self.addCleanup(self.server.stop)
        try:
            self.proxy = Bulwark(CONFIG, grpc_port=self.server.port, extra="")
        except RuntimeError as e:
            raise AssertionError("bulwark refused `protocol: h2`: %s" % e) from None
        self.addCleanup(self.proxy.stop)
        self.client = EchoClient(self.proxy.port)
        self.addCleanup(self.client.close)

    def reload(self, extra):
        before = self.proxy.stderr_text().count("config reloaded")
        with open(self.proxy.config_path, "w") as f:
            f.write(self.proxy.render(CONFIG, extra=extra))
        self.proxy.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while self.proxy.stderr_text().count("config reloaded") == before:
            self.assertLess(time.monotonic(), deadline, "no reload: " + self.proxy.stderr_text())
            time.sleep(0.02)

    def echo(self, feeder, replies, message):
        feeder.put(message)
        arrived, echo = next_with_timeout(replies, 3.0)
        self.assertTrue(arrived, "%r not echoed within 3 s" % message)
        self.assertEqual(echo, message)

    def test_open_bidi_call_survives_a_reload_that_changes_its_upstream(self):
        feeder = Feeder()
        replies = self.client.bidi(feeder, timeout=20)
        try:
            self.echo(feeder, replies, b"before the reload")
            self.reload(CHANGED)
            self.echo(feeder, replies, b"after the reload")
            self.assertEqual(self.client.unary(b"new call", timeout=10), b"new call")
            self.echo(feeder, replies, b"still open")
        finally:
            feeder.end()
        self.assertEqual(list(replies), [])
        self.assertEqual(replies.code(), grpc.StatusCode.OK)
        # The changed upstream starts fresh: the new call came on another upstream connection.
        self.assertEqual(len(self.server.peers["Bidi"]), 1)
        self.assertEqual(len(self.server.peers["Unary"]), 1)
        self.assertNotEqual(self.server.peers["Bidi"], self.server.peers["Unary"])

    def test_drain_lets_a_call_in_flight_finish(self):
        self.assertEqual(self.client.unary(b"warm", timeout=10), b"warm")
        in_flight = self.client.unary.future(command(b"in flight", key="d", sleep=800), timeout=10)
        deadline = time.monotonic() + 2
        while self.server.key_calls["d"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.proxy.signal(signal.SIGTERM)
        self.assertEqual(in_flight.result(), b"in flight")
        self.assertEqual(self.server.cancelled["d"], 0)
        self.assertEqual(self.proxy.wait(10), 0)


if __name__ == "__main__":
    unittest.main()
