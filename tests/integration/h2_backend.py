"""A Python HTTP/1.1 backend and the metric, process and tool helpers the HTTP/2 tests share."""
import collections
import re
import socket
import subprocess
import threading
import time
import zlib

from harness import (Bulwark, pattern, Reader)
from test_tls_upstream import sample


# --- a Python HTTP/1.1 backend for what bulwark-testd cannot do ----------------------------

class PyBackend:
    """Threads on 127.0.0.1 answering HTTP/1.1 with keep-alive:
      /py/trailers       a chunked body "hello, trailers" and trailer fields x-checksum: 1234,
                         x-status: done
      /py/conn-listed    a response whose Connection header names x-hop (sent) and, in a
                         second Connection line, Keep-Alive: x-hop and keep-alive must not
                         reach the client, x-end must
      /py/big?size=N     N bytes of harness.pattern(N) with Content-Length, written 64 KiB at
                         a time on a socket with a small send buffer; sent[N] is how many bytes
                         the kernel has taken so far (what bulwark has read, within ~200 KiB)."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.sent = collections.defaultdict(int)
        self.block = pattern(251 * 256)  # whole periods: consecutive copies continue the pattern
        self.conns = []
        self.last_raw = b""  # the last request as received (head and body)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        reader = Reader(c)
        try:
            while True:
                head = reader.read_until(b"\r\n\r\n").decode("latin-1")
                target = head.split(" ", 2)[1]
                length = re.search(r"(?im)^content-length:\s*(\d+)", head)
                raw = head.encode("latin-1")
                if length:
                    raw += reader.read_exact(int(length.group(1)))
                elif re.search(r"(?im)^transfer-encoding:\s*chunked", head):
                    while True:  # chunks, then the trailer section up to its empty line
                        line = reader.read_until(b"\r\n")
                        raw += line
                        if int(line.split(b";")[0].strip() or b"0", 16) == 0:
                            while True:
                                t = reader.read_until(b"\r\n")
                                raw += t
                                if t == b"\r\n":
                                    break
                            break
                        raw += reader.read_exact(int(line.split(b";")[0], 16) + 2)
                self.last_raw = raw
                if target.startswith("/py/echo"):
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                elif target.startswith("/py/trailers"):
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                              b"Transfer-Encoding: chunked\r\nTrailer: x-checksum, x-status\r\n\r\n"
                              b"7\r\nhello, \r\n8\r\ntrailers\r\n0\r\n"
                              b"x-checksum: 1234\r\nx-status: done\r\n\r\n")
                elif target.startswith("/py/conn-listed"):
                    c.sendall(b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\n"
                              b"Connection: Keep-Alive\r\nKeep-Alive: timeout=5\r\n"
                              b"X-End: 2\r\nContent-Length: 2\r\n\r\nok")
                elif target.startswith("/py/big"):
                    size = int(re.search(r"size=(\d+)", target).group(1))
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                              b"Content-Length: %d\r\n\r\n" % size)
                    left = size
                    while left > 0:
                        piece = self.block if left >= len(self.block) else self.block[:left]
                        c.sendall(piece)
                        left -= len(piece)
                        self.sent[size] += len(piece)
                else:
                    c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        except (OSError, EOFError, IndexError, AttributeError):
            pass
        finally:
            c.close()

    def stop(self):
        self.listener.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# --- helpers -------------------------------------------------------------------------------

def start_bulwark(template, **values):
    """Bulwark(template, ...), its refusal to start turned into a readable failure."""
    try:
        return Bulwark(template, **values)
    except RuntimeError as e:
        raise AssertionError("bulwark did not start with an HTTP/2 listener config "
                             "(protocols / http2 keys not implemented?): %s" % e) from None


def proc_status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class PeakRss:
    """The peak RSS growth of a process over a with-block, in KiB: VmHWM after resetting it
    (`5` to /proc/PID/clear_refs) where the kernel allows, and VmRSS sampled every 10 ms."""

    def __init__(self, pid):
        self.pid = pid
        self.growth = 0

    def _sample(self):
        while not self._stop.is_set():
            try:
                self._peak = max(self._peak, proc_status_kib(self.pid, "VmRSS"))
            except OSError:
                return
            self._stop.wait(0.01)

    def __enter__(self):
        self.base = proc_status_kib(self.pid, "VmRSS")
        try:
            with open("/proc/%d/clear_refs" % self.pid, "w") as f:
                f.write("5")
            self._hwm = True
        except OSError:
            self._hwm = False
        self._peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        peak = self._peak
        if self._hwm:
            try:
                peak = max(peak, proc_status_kib(self.pid, "VmHWM"))
            except OSError:
                pass
        self.growth = peak - self.base
        return False


def errors_total(proxy, listener, reason):
    return sample(proxy.metrics(), "bulwark_http2_protocol_errors_total", side="downstream",
                  name=listener, reason=reason) or 0


def open_streams(proxy, listener):
    return sample(proxy.metrics(), "bulwark_http2_streams", side="downstream", name=listener)


def requests_total(proxy, listener):
    return sample(proxy.metrics(), "bulwark_requests_total", listener=listener) or 0


def settled_requests_total(proxy, listener):
    """requests_total once it has not moved for 100 ms (the previous test's last counts land
    just after its responses)."""
    last = requests_total(proxy, listener)
    while True:
        time.sleep(0.1)
        now = requests_total(proxy, listener)
        if now == last:
            return now
        last = now


def pattern_crc(n):
    """crc32 of harness.pattern(n), computed by blocks (no n-byte buffer)."""
    block = pattern(251 * 4096)
    crc, left = 0, n
    while left > 0:
        piece = block if left >= len(block) else block[:left]
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
    return crc


def run(args, timeout=60):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def curl(*args, timeout=60):
    """curl -sS ARGS -w '\\n%{http_code} %{http_version}': (code, version, body text, process)."""
    p = run(["curl", "-sS", "-w", "\n%{http_code} %{http_version}", *args], timeout)
    body, _, tail = p.stdout.rpartition("\n")
    code, _, version = tail.partition(" ")
    return code, version, body, p


def h2load_summary(output):
    """(succeeded, failed, errored, count of 2xx) from h2load's summary."""
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored", output)
    codes = re.search(r"status codes: (\d+) 2xx", output)
    if not m or not codes:
        return None
    return int(m.group(4)), int(m.group(5)), int(m.group(6)), int(codes.group(1))
