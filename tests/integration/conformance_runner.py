"""Drives the conformance tables (conformance_cases.py, and conformance_responses.py when it
exists) against any HTTP/1.1 proxy listening on a port in front of a RecordingBackend.
Used by test_conformance.py (Bulwark) and scripts/differential.py (Bulwark, HAProxy, NGINX).

A request case sends raw bytes and reports what came back: the statuses of the responses, in
order; whether the proxy closed the connection after them (checked with a probe request on
the same connection, so a kept connection is also shown to be usable); and every complete
request the backend received, byte for byte."""
import re
import socket
import threading
import time

import conformance_responses

PROBE = b"GET /__probe HTTP/1.1\r\nHost: x\r\n\r\n"
UUID = re.compile(rb"X-Request-Id: [0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\r\n")


class Malformed(Exception):
    pass


def _chunked_end(buf, start):
    """Index just past a chunked body beginning at buf[start], None if incomplete. Strict."""
    i = start
    while True:
        eol = buf.find(b"\r\n", i)
        if eol < 0:
            return None
        line = buf[i:eol].split(b";")[0].strip(b" \t")
        try:
            size = int(line, 16)
        except ValueError:
            raise Malformed("chunk size %r" % line)
        i = eol + 2
        if size == 0:
            while True:  # trailer lines, then the empty line
                eol = buf.find(b"\r\n", i)
                if eol < 0:
                    return None
                if eol == i:
                    return i + 2
                i = eol + 2
        if len(buf) < i + size + 2:
            return None
        if buf[i + size:i + size + 2] != b"\r\n":
            raise Malformed("chunk data not followed by CRLF")
        i += size + 2


def _parse_head(head):
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise Malformed("request line %r" % lines[0])
    headers = []
    for line in lines[1:]:
        if b":" not in line:
            raise Malformed("header line %r" % line)
        k, v = line.split(b":", 1)
        headers.append((k.strip().lower(), v.strip()))
    return parts[0], parts[1], headers


def _request_end(buf):
    """(end index, method, target) of the first request in buf, or None if incomplete."""
    h = buf.find(b"\r\n\r\n")
    if h < 0:
        return None
    method, target, headers = _parse_head(buf[:h])
    body = h + 4
    te = b",".join(v for k, v in headers if k == b"transfer-encoding")
    cls = [v for k, v in headers if k == b"content-length"]
    if te:
        if te.split(b",")[-1].strip().lower() != b"chunked":
            raise Malformed("transfer-encoding %r" % te)
        end = _chunked_end(buf, body)
    elif cls:
        n = int(cls[0])
        end = body + n if len(buf) >= body + n else None
    else:
        end = body
    return None if end is None else (end, method, target)


class RecordingBackend:
    """An HTTP/1.1 origin on 127.0.0.1 that records each complete request it receives (raw)
    and answers 200 with the request target as body (503 when the target contains
    "fail=503"). With `replay_cases` set (name -> response case), GET /case/NAME is answered
    with that case's raw "response" bytes instead, paused before each "split_at" offset, the
    connection shut after them when "close_after" is set (the conventions of
    conformance_responses.py)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.lock = threading.Lock()
        self.requests = []    # complete requests, raw, in arrival order (probes excluded)
        self.incomplete = []  # bytes of requests cut short by the proxy
        self.malformed = []   # what could not be parsed as HTTP/1.1
        self.replay_cases = None
        self.connections = set()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self):
        with self.lock:
            self.requests, self.incomplete, self.malformed = [], [], []

    def take(self):
        with self.lock:
            return list(self.requests)

    def close_all(self):
        """Closes every connection the backend has open (so the next request comes on a new
        upstream connection)."""
        with self.lock:
            conns = list(self.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.settimeout(30)
        with self.lock:
            self.connections.add(conn)
        buf = b""
        try:
            while True:
                try:
                    found = _request_end(buf)
                except (Malformed, ValueError) as e:
                    with self.lock:
                        self.malformed.append((buf, str(e)))
                    return
                if found is None:
                    data = conn.recv(65536)
                    if not data:
                        if buf.strip():
                            with self.lock:
                                self.incomplete.append(buf)
                        return
                    buf += data
                    continue
                end, method, target = found
                raw, buf = buf[:end], buf[end:]
                if target != b"/__probe":
                    with self.lock:
                        self.requests.append(raw)
                cases = self.replay_cases
                if cases is not None and target.startswith(b"/case/"):
                    if conformance_responses.replay(conn, cases[target[6:].decode()]):
                        return
                    continue
                status = b"503 Service Unavailable" if b"fail=503" in target else b"200 OK"
                body = b"" if method == b"HEAD" else target
                conn.sendall(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status, len(target)) + body)
        except OSError:
            pass
        finally:
            with self.lock:
                self.connections.discard(conn)
            conn.close()


class Client:
    """One client connection reading responses with a deadline."""

    def __init__(self, port, timeout):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False
        self.last_status = None  # of the last final response head read, complete or not

    def _fill(self, deadline):
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:  # reset
            self.eof = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _until(self, marker, deadline):
        while marker not in self.buf:
            if not self._fill(deadline):
                return None
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, deadline, head=False):
        """(status, body) of the next final response; None on EOF or timeout first."""
        while True:
            raw = self._until(b"\r\n\r\n", deadline)
            if raw is None:
                return None
            lines = raw.decode("latin-1").split("\r\n")
            try:
                status = int(lines[0].split(" ")[1])
            except (IndexError, ValueError):
                return None
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if 100 <= status < 200 and status != 101:
                continue
            break
        self.last_status = status
        if head or status in (101, 204, 304):
            return status, b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                line = self._until(b"\r\n", deadline)
                if line is None:
                    return None
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self._until(b"\r\n", deadline) not in (b"\r\n", None):
                        pass
                    return status, body
                piece = self._exact(size + 2, deadline)
                if piece is None:
                    return None
                body += piece[:-2]
        if "content-length" in headers:
            body = self._exact(int(headers["content-length"]), deadline)
            return None if body is None else (status, body)
        while self._fill(deadline):
            pass
        body, self.buf = self.buf, b""
        return status, body

    def close(self):
        self.sock.close()


def run_request_case(port, backend, case, expected_responses, timeout=2.0):
    """Runs one request case. Returns {"status": [...], "closed": True | False | None (the
    proxy neither answered nor closed in time), "backend": [raw requests]}."""
    backend.reset()
    client = Client(port, timeout)
    pieces = case["send"] if isinstance(case["send"], list) else [case["send"]]
    head = pieces[0].startswith(b"HEAD ")
    try:
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(0.02)
            client.sock.sendall(piece)
        if case.get("half_close"):
            client.sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    statuses = []
    deadline = time.monotonic() + timeout
    while len(statuses) < expected_responses:
        r = client.read_response(deadline, head=head and not statuses)
        if r is None:
            break
        statuses.append(r[0])
    closed = None
    if client.eof:
        closed = True
    elif len(statuses) < expected_responses:
        closed = None  # waiting for something that never came
    elif case.get("half_close"):
        while True:  # answers beyond the expected ones, then the close
            r = client.read_response(deadline)
            if r is None:
                break
            statuses.append(r[0])
        closed = True if client.eof else None
    else:
        # Probe: a kept connection must answer a fresh request (and only after any extra
        # responses the case caused).
        try:
            client.sock.sendall(PROBE)
        except OSError:
            client.eof = True
        closed = True
        while not client.eof:
            r = client.read_response(deadline)
            if r is None:
                break
            if r[1] == b"/__probe":
                closed = False
                break
            statuses.append(r[0])
        if closed and not client.eof:
            closed = None
    client.close()
    if closed is not False:
        time.sleep(0.03)  # what the proxy sent upstream before giving up has arrived
    return {"status": statuses, "closed": closed, "backend": backend.take()}


def response_request(case):
    """The request a response case is fetched with (keys of conformance_responses.py)."""
    lines = ["%s /case/%s HTTP/%s" % (case.get("method", "GET"), case["name"],
                                       case.get("client_version", "1.1")), "Host: x"]
    lines += ["%s: %s" % kv for kv in case.get("request_headers", [])]
    body = case.get("request_body", b"")
    if body:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def run_response_case(port, backend, case, cases, timeout=3.0):
    """Runs one response case (`cases`: the whole RESPONSE_CASES): the backend answers with
    case["response"], on a new upstream connection. Returns what the client got: "STATUS",
    "STATUS cut" when the body did not arrive whole before the close or the timeout, "closed"
    when the connection closed before any response head, "timeout" when nothing came."""
    backend.reset()
    backend.replay_cases = {c["name"]: c for c in cases}
    backend.close_all()
    time.sleep(0.05)  # the proxies notice that their idle upstream connections are gone
    client = Client(port, timeout)
    try:
        client.sock.sendall(response_request(case))
        r = client.read_response(time.monotonic() + timeout, head=case.get("method") == "HEAD")
    except OSError:
        r = None
    finally:
        client.close()
    if r is not None:
        return str(r[0])
    if client.last_status is not None:
        return "%d cut" % client.last_status
    return "closed" if client.eof else "timeout"


def normalize(raw):
    """A recorded upstream request with a generated X-Request-Id replaced by {id}."""
    return UUID.sub(b"X-Request-Id: {id}\r\n", raw)


def expected_backend(case, backend_address):
    """The case's expected upstream requests with {endpoint} filled in."""
    return [r.replace(b"{endpoint}", backend_address.encode()) for r in case["expect"]["backend"]]


def describe(result):
    """A short cell for the differential table: statuses, C(losed)/K(ept)/T(imeout), and the
    number of complete requests the backend received."""
    status = ",".join(str(s) for s in result["status"]) or "-"
    conn = {True: "C", False: "K", None: "T"}[result["closed"]]
    return "%s %s %d" % (status, conn, len(result["backend"]))
