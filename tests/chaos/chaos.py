"""Shared pieces of the chaos suite: the integration harness (imported from
tests/integration), resource baselines of the bulwark process (descriptors and RSS), the check
that every client got a correct response or a documented local reply, and a tiny raw-socket
backend for the misbehaviours bulwark-testd has no mode for."""
import json
import os
import socket
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import harness  # noqa: E402  (after the sys.path change)
from harness import SANITIZED, Bulwark, Reader, Testd, connect, free_port, request, wait_for  # noqa: E402,F401

# Local replies documented in docs/reference.md ("Local replies"): reason -> status.
LOCAL_REPLIES = {
    "rate-limited": 429, "overloaded": 503, "circuit-open": 503, "no-healthy-upstream": 503,
    "pending-overflow": 503, "upstream-connect-failure": 502, "upstream-reset": 502,
    "upstream-protocol-error": 502, "upstream-timeout": 504, "no-route": 404,
    "bad-request": 400, "request-timeout": 408, "body-too-large": 413,
    "header-too-large": 431,
}

# Tolerances for "back to the baseline". Descriptors: idle pooled upstream connections may
# stay open (a few per endpoint), and the admin connection used to read metrics. RSS: the
# allocator keeps some freed memory; a leak of a request's worth of buffers per request
# would show far above this with the request counts used here.
FD_TOLERANCE = 6
RSS_TOLERANCE_KIB = 24 * 1024


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rst_close(s):
    """Close with an RST (SO_LINGER 0) instead of a FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


class Baseline:
    """Descriptor count and RSS of a process, taken once it is warm."""

    def __init__(self, pid):
        self.pid = pid
        self.fds = fd_count(pid)
        self.rss = rss_kib(pid)

    def check(self, test, timeout=8.0, fd_tolerance=FD_TOLERANCE, rss_tolerance=RSS_TOLERANCE_KIB):
        """Waits for the descriptor count to come back within `fd_tolerance` of the
        baseline, then checks RSS (not under sanitizers). Returns (fds, rss)."""
        deadline = time.time() + timeout
        fds = fd_count(self.pid)
        while fds > self.fds + fd_tolerance and time.time() < deadline:
            time.sleep(0.1)
            fds = fd_count(self.pid)
        test.assertLessEqual(fds, self.fds + fd_tolerance,
                             "descriptors: baseline %d, now %d: %s"
                             % (self.fds, fds, describe_fds(self.pid)))
        rss = rss_kib(self.pid)
        if not SANITIZED:
            test.assertLessEqual(rss, self.rss + rss_tolerance,
                                 "RSS: baseline %d KiB, now %d KiB" % (self.rss, rss))
        return fds, rss


def describe_fds(pid):
    kinds = {}
    for name in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, name))
        except OSError:
            continue
        kind = target.split(":")[0] if ":" in target else "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def check_answer(test, status, headers, body, expected_status=200, allowed_reasons=(), what=""):
    """A response is either the expected proxied one (no x-bulwark-reason) or one of the
    documented local replies in `allowed_reasons`, with its documented status and a problem
    body naming the same reason."""
    reason = headers.get("x-bulwark-reason")
    if reason is None:
        test.assertEqual(status, expected_status, "%s: %r %r" % (what, headers, body[:200]))
        return None
    test.assertIn(reason, allowed_reasons, "%s: unexpected local reply %s %r" % (what, status, body[:300]))
    test.assertEqual(status, LOCAL_REPLIES[reason], what)
    test.assertEqual(headers.get("content-type"), "application/problem+json", what)
    test.assertEqual(json.loads(body)["type"], "urn:bulwark:problem:" + reason, what)
    return reason


class ChaosTest(unittest.TestCase):
    """Per test: self.proxy (and whatever backends setUp made) stopped in tearDown; the proxy
    must exit 0 (a crash, a sanitizer report or a hang on shutdown fails the test)."""
    proxy = None

    def tearDown(self):
        proxy, self.proxy = self.proxy, None
        for stop in reversed(getattr(self, "_cleanups_chaos", [])):
            try:
                stop()
            except Exception:
                pass
        if proxy is not None:
            alive = proxy.proc.poll() is None
            code = proxy.stop()
            tail = proxy.stderr_text()[-3000:]
            self.assertTrue(alive, "bulwark died during the test (exit %s):\n%s" % (proxy.proc.returncode, tail))
            self.assertEqual(code, 0, tail)

    def on_teardown(self, fn):
        self.__dict__.setdefault("_cleanups_chaos", []).append(fn)

    def assert_alive(self):
        self.assertIsNone(self.proxy.proc.poll(), "bulwark died:\n" + self.proxy.stderr_text()[-3000:])

    def warm(self, path="/warm", n=3):
        for _ in range(n):
            self.assertEqual(request(self.proxy.port, "GET", path)[0], 200)


class RawBackend:
    """A raw-socket HTTP backend on an ephemeral port: `handler(sock, head_bytes)` is called
    in a thread per connection once a request head has arrived (or with head None when
    `on_accept` is set, right after accept, before reading anything)."""

    def __init__(self, handler, on_accept=False):
        self.handler = handler
        self.on_accept = on_accept
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.conns = []
        self.lock = threading.Lock()
        self.accepted = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            if self.on_accept:
                self.handler(c, None)
                return
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                i = buf.index(b"\r\n\r\n") + 4
                head, buf = buf[:i], buf[i:]
                if self.handler(c, head) is not True:  # True: keep serving this connection
                    return
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass


def run_clients(n, fn, threads=8):
    """Runs fn(i) for i in range(n) on `threads` threads; returns the list of results
    (an exception is returned in place of its result)."""
    results = [None] * n
    next_i = [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= n:
                return
            try:
                results[i] = fn(i)
            except Exception as e:  # noqa: BLE001  (reported by the caller)
                results[i] = e

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return results
