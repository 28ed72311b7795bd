"""Bulwark's own descriptor shortage (EMFILE) is not the backend's fault: connections it
cannot serve are answered 503 overloaded (when accepting and when connecting upstream),
logged, counted as refused accepts, and never counted against the endpoint or its breaker.
A start-up warning says when max_connections exceeds what RLIMIT_NOFILE allows."""
import resource
import select
import socket
import struct
import time
import unittest

from harness import Bulwark, Reader, Testd, connect, problem, request, wait_for

LIMIT = 48

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app, timeout: 30s }}
upstreams:
  - name: app
    endpoints: [{upstream}]
    circuit_breaker: {{ consecutive_failures: 1, open_for: 30s }}
"""


def low_fd_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


class FdLimit(unittest.TestCase):
    def setUp(self):
        self.backend = Testd()
        self.proxy = Bulwark(TEMPLATE, upstream=self.backend.address,
                             popen={"preexec_fn": low_fd_limit})
        self.held = []

    def tearDown(self):
        for s in self.held:
            s.close()
        code = self.proxy.stop()
        self.backend.stop()
        self.assertEqual(code, 0, self.proxy.stderr_text())

    def hold(self):
        """A new connection with a slow request: None while it is in flight, else the
        (status, headers, body) Bulwark answered at once."""
        s = connect(self.proxy.port)
        self.held.append(s)
        s.sendall(b"GET /hold?delay=20000 HTTP/1.1\r\nHost: x\r\n\r\n")
        if not select.select([s], [], [], 0.5)[0]:
            return None
        return Reader(s).read_response()

    def check_overloaded(self, response, closed):
        status, h, body = response
        self.assertEqual(status, 503, (h, body, self.proxy.stderr_text()))
        self.assertEqual(h["x-bulwark-reason"], "overloaded")
        self.assertEqual(h["retry-after"], "1")
        self.assertEqual(problem(body)["detail"], "Bulwark is out of file descriptors")
        self.assertEqual(h.get("connection") == "close", closed)

    def test_out_of_descriptors_answers_503_overloaded(self):
        self.assertIn("file descriptor limit (RLIMIT_NOFILE) is %d" % LIMIT, self.proxy.stderr_text())
        # One ordinary request first. (Under UBSan this also warms its type-check cache: a
        # first check made while the process has no descriptor left cannot read the vtable,
        # which UBSan checks through a pipe, and is reported as a false "invalid vptr".)
        self.assertEqual(request(self.proxy.port, "GET", "/warm")[0], 200)
        # An idle client: one descriptor that can be given back at will.
        spare = connect(self.proxy.port)
        wait_for(lambda: self.proxy.metric("bulwark_downstream_connections") == 1)
        accept_refused = connect_refused = None
        for _ in range(LIMIT):
            response = self.hold()
            if response is None:
                continue
            if response[1].get("connection") == "close":
                accept_refused = response
                break
            connect_refused = response  # accepted with the last descriptor, none left to connect
        self.assertIsNotNone(accept_refused, "no connection was refused")
        self.check_overloaded(accept_refused, closed=True)
        if connect_refused is None:
            # None left at once: give one back, and the next request has a client socket
            # but none for its upstream connection.
            spare.close()
            time.sleep(0.5)
            connect_refused = self.hold()
        self.assertIsNotNone(connect_refused)
        self.check_overloaded(connect_refused, closed=False)
        self.assertIn("out of file descriptors", self.proxy.stderr_text())

        spare.close()
        for s in self.held:  # give the descriptors back: reset, so Bulwark drops them at once
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        self.held = []
        def settled():
            try:  # until Bulwark has seen the resets, the admin listener may be refused too
                return self.proxy.metric("bulwark_inflight_requests", upstream="app") == 0
            except (EOFError, ConnectionError):
                return False
        wait_for(settled, what="the held requests gone")
        p = self.proxy
        self.assertGreaterEqual(p.metric("bulwark_accepts_refused_total", listener="inbound",
                                         reason="fd_limit"), 1)
        self.assertGreaterEqual(p.metric("bulwark_local_replies_total", reason="overloaded"), 1)
        # Never the endpoint's fault: no failure counted, the breaker (one failure opens it)
        # stayed closed, and the endpoint serves at once.
        self.assertEqual(p.metric("bulwark_upstream_requests_total", outcome="connect_failure"), 0)
        self.assertEqual(p.metric("bulwark_pool_connects_total", result="failure"), 0)
        self.assertEqual(p.metric("bulwark_circuit_state", state="open"), 0)
        self.assertEqual(request(p.port, "GET", "/after")[0], 200)


if __name__ == "__main__":
    unittest.main()
