"""Helpers for integration tests: start the real bulwark binary and bulwark-testd
backends on loopback (ephemeral ports), and speak raw HTTP/1.1 to them."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import zlib

BULWARK = os.environ.get("BULWARK_BIN", os.path.join(os.path.dirname(__file__), "../../build/bulwark"))
# Sanitizer builds keep shadow memory and a quarantine of freed blocks: RSS limits do not apply.
SANITIZED = os.environ.get("BULWARK_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
TESTD = os.environ.get("BULWARK_TESTD", os.path.join(os.path.dirname(__file__), "../../build/bulwark-testd"))


_handed_out = set()


def free_port():
    """A port free on 127.0.0.1 now, never one this process was given before: the kernel
    may hand the same ephemeral port to two bind-to-0 calls in a row once the first socket
    is closed (a listener and the admin then collided on CI)."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def pattern(n):
    """The body bulwark-testd generates for size=n: byte i is i % 251."""
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


def crc_hex(data):
    return "%08x" % (zlib.crc32(data) & 0xFFFFFFFF)


class Testd:
    def __init__(self, *args, name="testd"):
        self.proc = subprocess.Popen([TESTD, "--port", "0", "--name", name, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError("testd did not start: %r %r" % (line, self.proc.stderr.read()))
        self.port = int(line.split()[1])
        self.address = "127.0.0.1:%d" % self.port

    def stats(self):
        status, _, body = request(self.port, "GET", "/__stats")
        return json.loads(body)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()


MINIMAL = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: {log} }}
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
"""


class Bulwark:
    """Runs bulwark with a config template; {port}, {admin}, {log} and any keyword given
    are filled in. Waits until /ready answers 200. `popen` adds subprocess.Popen arguments
    (stdout, preexec_fn, ...). `write_config(dir, text)`, when given, writes the config text
    its own way (a symlink, a ConfigMap-like layout; `dir` is the run directory) and returns
    the path passed to `-c`; by default the text goes to dir/bulwark.yaml. `render` fills in
    another template with the same ports, to rewrite the config of the running process."""

    def __init__(self, template=MINIMAL, wait_ready=True, popen=None, write_config=None, **values):
        self.dir = tempfile.mkdtemp(prefix="bulwark-test-")
        self.log_path = os.path.join(self.dir, "access.log")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        # A port free when free_port() looked can be taken before bulwark binds it (by another
        # test running in parallel): then bulwark exits at once, and it starts again on fresh
        # ports. Any other failure is the test's.
        for attempt in range(3):
            self.port = free_port()
            self.admin_port = free_port()
            self.values = dict(port=self.port, admin=self.admin_port, log=self.log_path, **values)
            if write_config:
                self.config_path = write_config(self.dir, self.render(template))
            else:
                self.config_path = os.path.join(self.dir, "bulwark.yaml")
                with open(self.config_path, "w") as f:
                    f.write(self.render(template))
            self.stderr = open(self.stderr_path, "wb")
            args = {"stdout": subprocess.DEVNULL, "stderr": self.stderr}
            args.update(popen or {})
            self.proc = subprocess.Popen([BULWARK, "-c", self.config_path], **args)
            if not wait_ready:
                return
            try:
                self.wait_ready()
                return
            except RuntimeError as e:
                lost_port = self.proc.poll() is not None and "Address already in use" in str(e)
                if not lost_port or attempt == 2:
                    raise
                self.proc.wait()
                self.stderr.close()

    def render(self, template, **values):
        """`template` filled in with this instance's {port}, {admin}, {log} and start keywords,
        `values` added or overriding: a config text for the same process (to rewrite its file)."""
        return template.format(**dict(self.values, **values))

    def wait_ready(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("bulwark exited: " + self.stderr_text())
            try:
                status, _, _ = request(self.admin_port, "GET", "/ready", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("bulwark not ready: " + self.stderr_text())

    def stderr_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def metrics(self):
        _, _, body = request(self.admin_port, "GET", "/metrics")
        return body.decode()

    def metric(self, name, **labels):
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        found = False
        for line in self.metrics().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, value = line.rsplit(" ", 1)
            metric_name = head.split("{", 1)[0]
            if metric_name != name:
                continue
            label_text = head[len(metric_name):].strip("{}")
            have = {}
            for part in label_text.split('",') if label_text else []:
                k, v = part.split("=", 1)
                have[k] = v.strip('"')
            if all(have.get(k) == str(v) for k, v in labels.items()):
                total += float(value)
                found = True
        return total if found else None

    def metric_eventually(self, expected, name, timeout=2.0, **labels):
        """The metric once it equals `expected` (counters settle just after the response is
        sent), or its last value after `timeout`."""
        deadline = time.time() + timeout
        value = self.metric(name, **labels)
        while value != expected and time.time() < deadline:
            time.sleep(0.02)
            value = self.metric(name, **labels)
        return value

    def access_log(self, until=None, timeout=3.0):
        """The access-log entries. With `until`, polls until until(entries) holds (or
        `timeout` passes): lines are written by the worker a little after the response."""
        def read():
            try:
                with open(self.log_path) as f:
                    return [json.loads(line) for line in f if line.strip()]
            except FileNotFoundError:
                return []
        if until is None:
            time.sleep(0.05)
            return read()
        deadline = time.time() + timeout
        entries = read()
        while not until(entries) and time.time() < deadline:
            time.sleep(0.02)
            entries = read()
        return entries

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=30):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        return self.proc.returncode


# --- raw HTTP/1.1 -----------------------------------------------------------------

def connect(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Reader:
    """Buffered reader of HTTP responses from a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def read_until(self, marker):
        while marker not in self.buf:
            self._fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        chunks = []
        have = len(self.buf)
        if have >= n:
            out, self.buf = self.buf[:n], self.buf[n:]
            return out
        chunks.append(self.buf)
        self.buf = b""
        need = n - have
        while need > 0:
            data = self.sock.recv(min(need, 1 << 20))
            if not data:
                raise EOFError("connection closed after %d of %d bytes" % (n - need, n))
            chunks.append(data)
            need -= len(data)
        return b"".join(chunks)

    def read_to_eof(self):
        chunks = [self.buf]
        self.buf = b""
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def read_head(self):
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        version, status = lines[0].split(" ")[0], int(lines[0].split(" ")[1])
        headers = []
        for line in lines[1:]:
            if line:
                k, v = line.split(":", 1)
                headers.append((k.strip().lower(), v.strip()))
        return version, status, headers

    def read_response(self, head_request=False, sink=None):
        """Returns (status, headers as dict of lower-case name -> value, body). Interim 1xx
        responses other than 101 are skipped. With `sink`, body bytes go to sink(bytes)."""
        while True:
            version, status, headers = self.read_head()
            if 100 <= status < 200 and status != 101:
                continue
            break
        h = {}
        for k, v in headers:
            h[k] = v if k not in h else h[k] + ", " + v
        h[":version"] = version
        body = b""
        parts = []
        emit = sink or parts.append
        if head_request or status in (204, 304, 101):
            pass
        elif "chunked" in h.get("transfer-encoding", ""):
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self.read_until(b"\r\n")
                    break
                emit(self.read_exact(size))
                self.read_exact(2)
        elif "content-length" in h:
            n = int(h["content-length"])
            while n > 0:
                piece = self.read_exact(min(n, 1 << 20))
                emit(piece)
                n -= len(piece)
        else:
            emit(self.read_to_eof())
        if not sink:
            body = b"".join(parts)
        return status, h, body


def request(port, method, path, headers=None, body=b"", timeout=10, version="1.1"):
    """One request on a new connection (Connection: close). Returns (status, headers, body)."""
    s = connect(port, timeout)
    try:
        hdrs = {"Host": "localhost", "Connection": "close"}
        hdrs.update(headers or {})
        if body and "Content-Length" not in hdrs and "Transfer-Encoding" not in hdrs:
            hdrs["Content-Length"] = str(len(body))
        data = "%s %s HTTP/%s\r\n" % (method, path, version)
        data += "".join("%s: %s\r\n" % kv for kv in hdrs.items()) + "\r\n"
        s.sendall(data.encode() + body)
        return Reader(s).read_response(head_request=(method == "HEAD"))
    finally:
        s.close()


def chunked(data, size=4096):
    out = b""
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def problem(body):
    return json.loads(body)


class ProxyTest(unittest.TestCase):
    """Base class: one testd backend and one bulwark in front of it, per test class."""
    template = MINIMAL
    extra = {}

    @classmethod
    def setUpClass(cls):
        cls.backend = Testd()
        cls.proxy = Bulwark(cls.template, upstream=cls.backend.address, **cls.extra)

    @classmethod
    def tearDownClass(cls):
        code = cls.proxy.stop()
        cls.backend.stop()
        if code not in (0, None):
            raise AssertionError("bulwark exited with %s:\n%s" % (code, cls.proxy.stderr_text()))

    def get(self, path, **kw):
        return request(self.proxy.port, "GET", path, **kw)


def wait_for(predicate, timeout=5.0, interval=0.02, what="condition"):
    """Polls `predicate` until it returns a true value (returned) or `timeout` passes
    (AssertionError naming `what` and the last value)."""
    deadline = time.time() + timeout
    value = predicate()
    while not value and time.time() < deadline:
        time.sleep(interval)
        value = predicate()
    if not value:
        raise AssertionError("timed out after %.1f s waiting for %s (last: %r)" % (timeout, what, value))
    return value
