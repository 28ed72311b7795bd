"""Downstream HTTP/2 (RFC 9113) on listeners, written ahead of the feature to its contract.

`protocols: [http1, h2c, h2]` on a listener: h2c is cleartext HTTP/2 with prior knowledge (a
connection that starts with the preface; with http1 listed too, any other first bytes are
HTTP/1), h2 is offered by ALPN on a TLS listener (preferred over http/1.1 when http1 is listed).
`http2: { max_concurrent_streams, initial_window, max_frame_size }` tunes a listener. Each
stream is one request through the HTTP/1 path (routes, rate limits, local replies with
x-bulwark-reason, upstreams in HTTP/1.1, trailers back as a trailing HEADERS frame), counted in
bulwark_requests_total; bulwark_http2_streams{side="downstream",name} gauges open streams and
bulwark_http2_protocol_errors_total{side="downstream",name,reason} counts the protections:
rapid reset, CONTINUATION flood, HPACK bomb, too many streams, SETTINGS and PING floods and
zero-window stalls, each ending the connection with GOAWAY while other clients keep being
served and the process stays small. Flow control bounds what is buffered both ways; SIGTERM
sends GOAWAY and lets streams finish; a reload applies to new streams of open connections.

Happy paths use real clients (curl --http2-prior-knowledge / --http2, nghttp, h2load); attacks
and exact assertions use the raw-frame client below (frames packed by hand, HPACK from the
`hpack` module for ordinary requests and by hand, without Huffman or indexing, for attacks).

Debian packages needed (add to BULWARK_TEST_PACKAGES in scripts/deps.sh):
  nghttp2-client  (nghttp, h2load)
  python3-h2      (brings python3-hpack: the raw client decodes bulwark's header blocks with it)
  curl, openssl   (already listed)
A test whose tool is missing is skipped, saying which.
"""
import contextlib
import collections
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import unittest
import zlib

from harness import (SANITIZED, Bulwark, Reader, Testd, connect, crc_hex, free_port, pattern,
                     request, wait_for)
from test_tls_upstream import check, sample
from tls_backend import pki

try:
    import hpack
    HAVE_HPACK = True
except ImportError:  # python3-hpack (a dependency of python3-h2) is not installed
    hpack = None
    HAVE_HPACK = False

HAVE_CURL = shutil.which("curl") is not None
HAVE_NGHTTP = shutil.which("nghttp") is not None
HAVE_H2LOAD = shutil.which("h2load") is not None
HAVE_OPENSSL = shutil.which("openssl") is not None
NEEDS_HPACK = unittest.skipUnless(HAVE_HPACK, "needs python3-hpack (python3-h2) for the raw HTTP/2 client")

MIB = 1 << 20
RSS_LIMIT_KIB = 64 * 1024  # the most an attack may add to bulwark's peak RSS

# --- frames (RFC 9113 section 6) -----------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
(DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE,
 CONTINUATION) = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
               "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
(SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS,
 SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE) = range(1, 7)
ERRORS = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
          "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
          "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"]
NO_ERROR, PROTOCOL_ERROR = 0x0, 0x1
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x6, 0x7, 0x8, 0x9, 0xB

Frame = collections.namedtuple("Frame", "type flags stream payload")
Goaway = collections.namedtuple("Goaway", "last_stream code debug")


def error_name(code):
    return ERRORS[code] if 0 <= code < len(ERRORS) else "0x%x" % code


def frame(ftype, flags, stream_id, payload=b""):
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags, stream_id & 0x7FFFFFFF) + payload


def settings_frame(settings=None, ack=False):
    payload = b"".join(struct.pack(">HI", k, v) for k, v in (settings or {}).items())
    return frame(SETTINGS, ACK if ack else 0, 0, payload)


def window_update(stream_id, increment):
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def rst_stream(stream_id, code=CANCEL):
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def ping(data=b"bulwark!", ack=False):
    return frame(PING, ACK if ack else 0, 0, data)


# --- HPACK by hand (RFC 7541): literals without Huffman, for attack frames -------------------

def hpack_int(value, prefix_bits, flags=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = [flags | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(data):
    return hpack_int(len(data), 7) + data


def hpack_literal(name, value, index=False):
    """A literal field with a new name: with incremental indexing (added to the dynamic table)
    or without indexing (no decoder state changes)."""
    return (b"\x40" if index else b"\x00") + hpack_string(name) + hpack_string(value)


def hpack_indexed(index):
    return hpack_int(index, 7, 0x80)


def request_block(path=b"/", method=b"GET", authority=b"localhost", extra=()):
    """A request header block that leaves no state in the decoder."""
    fields = [(b":method", method), (b":scheme", b"http"), (b":authority", authority),
              (b":path", path)] + list(extra)
    return b"".join(hpack_literal(n, v) for n, v in fields)


# --- the raw client ------------------------------------------------------------------------

class Stream:
    def __init__(self, sid, send_window):
        self.id = sid
        self.headers = None     # the final response head: [(name, value)], names as sent
        self.interim = []       # 1xx heads
        self.trailers = None
        self.data = bytearray()
        self.sink = None        # when set, DATA payloads go to sink(bytes) instead of .data
        self.received = 0       # DATA bytes received (padding excluded)
        self.ended = False      # END_STREAM received
        self.reset = None       # the RST_STREAM error code received
        self.send_window = send_window

    @property
    def status(self):
        value = self.header(":status")
        return int(value) if value is not None else None

    def header(self, name):
        for k, v in self.headers or ():
            if k == name:
                return v
        return None

    @property
    def done(self):
        return self.ended or self.reset is not None

    @property
    def body(self):
        return bytes(self.data)

    def describe(self):
        if self.reset is not None:
            state = "reset with %s" % error_name(self.reset)
        elif self.headers is None:
            state = "no response head"
        else:
            state = "status %s" % self.header(":status")
            reason = self.header("x-bulwark-reason")
            if reason:
                state += " (%s)" % reason
        return "stream %d: %s, %d body bytes%s" % (self.id, state, self.received,
                                                   ", ended" if self.ended else "")


class H2Conn:
    """An HTTP/2 client connection on a blocking socket, driven from one thread: request()
    sends, pump() reads and handles frames until a condition holds. By default it answers
    PINGs and SETTINGS and opens the flow-control windows as DATA is consumed (auto_window);
    tests turn that off to play a client that does not read."""

    def __init__(self, port, settings=None, ssl_context=None, server_hostname="localhost",
                 rcvbuf=None, preface_chunks=None, handshake=True, timeout=5):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect(("127.0.0.1", port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ssl_context.wrap_socket(raw, server_hostname=server_hostname) if ssl_context else raw
        self.buf = bytearray()
        self.pos = 0
        self.first_bytes = b""
        self.closed = False
        self.close_reason = None
        self.goaways = []
        self.server_settings = {}
        self.got_settings = False
        self.settings_acked = False
        self.first_frame = None
        self.streams = {}
        self.next_id = 1
        self.send_window = 65535
        self.counts = collections.Counter()
        self.pings_acked = 0
        self.auto_window = True
        self.auto_ack = True
        self.our_settings = dict(settings or {})
        self.encoder = hpack.Encoder() if hpack else None
        self.decoder = hpack.Decoder() if hpack else None
        if self.decoder:
            self.decoder.max_header_list_size = 1 << 20
        self._block = None  # (stream id, HEADERS flags, fragments) until END_HEADERS
        self.sent_bytes = 0
        if handshake:
            self.handshake(preface_chunks)

    # sending
    def send(self, data):
        self.sock.settimeout(10)
        try:
            self.sock.sendall(data)
        except (OSError, ssl.SSLError) as e:
            self.closed = True
            self.close_reason = self.close_reason or "send failed: %r" % e
            raise AssertionError("sending to bulwark failed (%r): %s" % (e, self.describe()))
        self.sent_bytes += len(data)

    def _reply(self, data):
        """Automatic answers (ACKs, window updates): never raise, the peer may be gone."""
        if not self.closed:
            self.try_send(data, timeout=2)

    def try_send(self, data, timeout=5):
        """For floods: False (and nothing raised) when bulwark stopped reading or closed."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except (OSError, ssl.SSLError) as e:  # socket.timeout included
            self.close_reason = self.close_reason or "send failed: %r" % e
            return False
        self.sent_bytes += len(data)
        return True

    def new_stream(self):
        sid = self.next_id
        self.next_id += 2
        self.streams[sid] = Stream(sid, self.server_settings.get(SETTINGS_INITIAL_WINDOW_SIZE, 65535))
        return sid

    def max_frame(self):
        return self.server_settings.get(SETTINGS_MAX_FRAME_SIZE, 16384)

    def send_block(self, sid, block, end_stream):
        """HEADERS (and CONTINUATION frames past the peer's frame size) carrying `block`."""
        size = self.max_frame()
        pieces = [block[i:i + size] for i in range(0, len(block), size)] or [b""]
        out = []
        for i, piece in enumerate(pieces):
            flags = END_HEADERS if i == len(pieces) - 1 else 0
            if i == 0:
                out.append(frame(HEADERS, flags | (END_STREAM if end_stream else 0), sid, piece))
            else:
                out.append(frame(CONTINUATION, flags, sid, piece))
        self.send(b"".join(out))

    def request(self, method, path, authority="localhost", scheme="http", headers=(), body=None,
                end_stream=None):
        """Opens a stream (HPACK by the hpack module); returns its id. With `body` the DATA
        follows within the flow-control windows; `end_stream=False` leaves the stream open."""
        sid = self.new_stream()
        fields = [(":method", method), (":scheme", scheme), (":authority", authority),
                  (":path", path)] + list(headers)
        block = self.encoder.encode(fields)
        if body is None:
            self.send_block(sid, block, end_stream is not False)
        else:
            self.send_block(sid, block, False)
            self.send_data(sid, body, end_stream=end_stream is not False)
        return sid

    def send_data(self, sid, data, end_stream=True, timeout=15, stop_on_response=False):
        """Sends `data` on the stream as the windows allow, reading frames (and so window
        updates) while blocked. Returns False if the stream was reset or answered
        (stop_on_response) before all was sent."""
        s = self.streams[sid]
        view = memoryview(data)
        off = 0
        if not data:
            self.send(frame(DATA, END_STREAM if end_stream else 0, sid))
            return True
        while off < len(data):
            n = min(len(data) - off, self.send_window, s.send_window, self.max_frame())
            if n <= 0:
                def unblocked():
                    return (min(self.send_window, s.send_window) > 0 or s.reset is not None
                            or (stop_on_response and s.headers is not None))
                if not self.pump(unblocked, timeout):
                    raise AssertionError(
                        "upload stuck after %d of %d bytes: bulwark opened no flow-control window "
                        "in %d s (connection window %d, stream window %d); %s"
                        % (off, len(data), timeout, self.send_window, s.send_window, self.describe()))
                if s.reset is not None or self.closed or (stop_on_response and s.headers is not None):
                    return False
                continue
            last = off + n == len(data)
            self.send(frame(DATA, END_STREAM if last and end_stream else 0, sid, bytes(view[off:off + n])))
            off += n
            self.send_window -= n
            s.send_window -= n
        return True

    # receiving
    def handshake(self, preface_chunks=None, timeout=5):
        data = PREFACE + settings_frame(self.our_settings)
        if preface_chunks:
            cut = 0
            for n in preface_chunks:
                self.send(data[cut:cut + n])
                cut += n
                time.sleep(0.1)
            data = data[cut:]
        self.send(data)
        self.pump(lambda: self.got_settings and self.settings_acked, timeout)
        if self.first_frame is not None and self.first_frame != SETTINGS:
            raise AssertionError("bulwark's first HTTP/2 frame was %s, not SETTINGS (RFC 9113 3.4)"
                                 % FRAME_NAMES[self.first_frame])
        if not (self.got_settings and self.settings_acked):
            raise AssertionError("no HTTP/2 connection (server SETTINGS %s, our SETTINGS %s): %s"
                                 % ("received" if self.got_settings else "never received",
                                    "acknowledged" if self.settings_acked else "not acknowledged",
                                    self.describe()))

    def _recv(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except (OSError, ssl.SSLError) as e:
            self.closed = True
            self.close_reason = self.close_reason or "reset: %r" % e
            return False
        if not data:
            self.closed = True
            self.close_reason = self.close_reason or "closed by bulwark (EOF)"
            return False
        if len(self.first_bytes) < 64:
            self.first_bytes += data[:64 - len(self.first_bytes)]
        self.buf += data
        return True

    def read_frame(self, timeout):
        """The next frame, or None (timed out, or the connection ended: see .closed)."""
        deadline = time.time() + timeout
        while True:
            have = len(self.buf) - self.pos
            if have >= 9:
                n = int.from_bytes(self.buf[self.pos:self.pos + 3], "big")
                if have >= 9 + n:
                    ftype, flags, sid = struct.unpack(">BBI", self.buf[self.pos + 3:self.pos + 9])
                    payload = bytes(self.buf[self.pos + 9:self.pos + 9 + n])
                    self.pos += 9 + n
                    if self.pos > MIB:
                        del self.buf[:self.pos]
                        self.pos = 0
                    return Frame(ftype, flags, sid & 0x7FFFFFFF, payload)
            if self.closed:
                return None
            remaining = deadline - time.time()
            if remaining <= 0:
                return None
            self._recv(remaining)

    def pump(self, until=lambda: False, timeout=10):
        """Handles frames until until() holds (True), the time is up or the connection ended
        (until()'s value then)."""
        deadline = time.time() + timeout
        while not until():
            remaining = deadline - time.time()
            if remaining <= 0:
                break
            f = self.read_frame(remaining)
            if f is None:
                if self.closed:
                    break
                continue
            self.handle(f)
        return until()

    def poll(self, timeout=0.005):
        """Handles whatever frames arrive within `timeout`."""
        self.pump(lambda: False, timeout)

    def stream(self, sid):
        if sid not in self.streams:
            self.streams[sid] = Stream(sid, self.server_settings.get(SETTINGS_INITIAL_WINDOW_SIZE, 65535))
        return self.streams[sid]

    def _decode(self, block):
        try:
            fields = self.decoder.decode(bytes(block), raw=True)
        except Exception as e:  # noqa: BLE001 -- any HPACK error is bulwark's
            raise AssertionError("bulwark sent a header block the HPACK decoder refuses: %r" % e)
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in fields]

    def _head(self, sid, flags, block):
        s = self.stream(sid)
        fields = self._decode(block)
        status = dict(fields).get(":status")
        if s.headers is None and status is not None and status.startswith("1"):
            s.interim.append(fields)
        elif s.headers is None:
            s.headers = fields
        else:
            s.trailers = fields
        if flags & END_STREAM:
            s.ended = True

    def handle(self, f):
        self.counts[FRAME_NAMES[f.type] if f.type < len(FRAME_NAMES) else "type%d" % f.type] += 1
        if self.first_frame is None:
            self.first_frame = f.type
        payload = f.payload
        if f.type in (DATA, HEADERS) and f.flags & PADDED:
            payload = payload[1:len(payload) - payload[0]]
        if f.type == DATA:
            s = self.stream(f.stream)
            s.received += len(payload)
            if s.sink:
                s.sink(payload)
            else:
                s.data += payload
            if f.flags & END_STREAM:
                s.ended = True
            if self.auto_window and f.payload:
                n = len(f.payload)
                out = window_update(0, n)
                if not s.ended:
                    out += window_update(f.stream, n)
                self._reply(out)
        elif f.type == HEADERS:
            if f.flags & PRIORITY_FLAG:
                payload = payload[5:]
            if f.flags & END_HEADERS:
                self._head(f.stream, f.flags, payload)
            else:
                self._block = (f.stream, f.flags, [payload])
        elif f.type == CONTINUATION:
            if self._block is None:
                raise AssertionError("bulwark sent CONTINUATION without HEADERS")
            self._block[2].append(payload)
            if f.flags & END_HEADERS:
                sid, flags, parts = self._block
                self._block = None
                self._head(sid, flags, b"".join(parts))
        elif f.type == RST_STREAM:
            self.stream(f.stream).reset = struct.unpack(">I", payload[:4])[0]
        elif f.type == SETTINGS:
            if f.flags & ACK:
                self.settings_acked = True
            else:
                new = {}
                for i in range(0, len(payload) - 5, 6):
                    k, v = struct.unpack(">HI", payload[i:i + 6])
                    new[k] = v
                if SETTINGS_INITIAL_WINDOW_SIZE in new:
                    delta = new[SETTINGS_INITIAL_WINDOW_SIZE] - self.server_settings.get(
                        SETTINGS_INITIAL_WINDOW_SIZE, 65535)
                    for s in self.streams.values():
                        s.send_window += delta
                self.server_settings.update(new)
                self.got_settings = True
                if self.auto_ack:
                    self._reply(settings_frame(ack=True))
        elif f.type == PING:
            if f.flags & ACK:
                self.pings_acked += 1
            elif self.auto_ack:
                self._reply(ping(payload, ack=True))
        elif f.type == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaways.append(Goaway(last & 0x7FFFFFFF, code, payload[8:]))
        elif f.type == WINDOW_UPDATE:
            inc = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            if f.stream == 0:
                self.send_window += inc
            else:
                self.stream(f.stream).send_window += inc

    # conveniences
    def wait(self, sid, timeout=10):
        s = self.streams[sid]
        self.pump(lambda: s.done, timeout)
        return s

    def get(self, path, timeout=10, **kw):
        return self.wait(self.request("GET", path, **kw), timeout)

    def wait_closed(self, timeout=5):
        return self.pump(lambda: self.closed, timeout)

    def goaway_codes(self):
        return [g.code for g in self.goaways]

    def describe(self):
        parts = []
        if self.goaways:
            parts.append("GOAWAY " + ", ".join("(last stream %d, %s%s)" % (
                g.last_stream, error_name(g.code), ", %r" % g.debug[:80] if g.debug else "")
                for g in self.goaways))
        parts.append(self.close_reason or "connection open")
        if self.counts:
            parts.append("frames received: " + ", ".join("%s x%d" % kv for kv in sorted(self.counts.items())))
        elif self.first_bytes:
            parts.append("first bytes received: %r (not HTTP/2?)" % self.first_bytes)
        else:
            parts.append("nothing received")
        open_streams = [s.describe() for s in self.streams.values()][-6:]
        if open_streams:
            parts.append("; ".join(open_streams))
        return "; ".join(parts)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --- a Python HTTP/1.1 backend for what bulwark-testd cannot do ----------------------------

class PyBackend:
    """Threads on 127.0.0.1 answering HTTP/1.1 with keep-alive:
      /py/trailers       a chunked body "hello, trailers" and trailer fields x-checksum: 1234,
                         x-status: done
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



# --- --check: the protocols key and the http2 block ----------------------------------------

class CheckProtocols(unittest.TestCase):
    """`bulwark --check`: valid protocol lists pass; h2c on TLS, h2 without TLS, unknown names
    and out-of-range http2 settings are errors at FILE:LINE:COL: key.path."""

    def config(self, protocols, tls=False, http2=None):
        lines = ["listeners:", "  - name: in", "    listen: 127.0.0.1:8443"]
        if tls:
            lines.append('    tls: { cert: "%s", key: "%s" }' % (pki().server_cert, pki().server_key))
        lines.append("    protocols: %s" % protocols)
        if http2:
            lines.append("    http2: %s" % http2)
        lines += ["    routes: [{ name: api, upstream: app }]", "upstreams:", "  - name: app",
                  "    endpoints: [127.0.0.1:8080]"]
        return "\n".join(lines) + "\n"

    @staticmethod
    def line_of(text, key):
        return [i + 1 for i, l in enumerate(text.splitlines()) if l.strip().startswith(key + ":")][0]

    def assert_ok(self, text):
        path, code, out, err = check(text)
        self.assertEqual((code, out, err), (0, "%s: ok\n" % path, ""), "--check refused:\n" + text)

    def assert_error_at(self, text, key, key_path):
        path, code, out, err = check(text)
        self.assertNotEqual(code, 0, "--check accepted:\n" + text)
        line = self.line_of(text, key)
        # FILE:LINE:COL: key.path: message -- on the line of the key, and not "unknown key".
        m = re.search(r"(?m)^%s:%d:\d+: %s: (?P<message>(?!unknown key)\S.*)$" % (re.escape(path), line, key_path), err)
        self.assertTrue(m, "expected FILE:%d:COL: %s: message, for:\n%s\ngot:\n%s" % (line, key_path, text, err))
        return m.group("message")

    def test_valid_plain_protocol_lists(self):
        for protocols in ("[http1, h2c]", "[h2c]", "[http1]", "[h2c, http1]"):
            with self.subTest(protocols=protocols):
                self.assert_ok(self.config(protocols))

    def test_http2_block_with_its_documented_defaults(self):
        self.assert_ok(self.config("[http1, h2c]", http2="{ max_concurrent_streams: 100, "
                                   "initial_window: 256KiB, max_frame_size: 16KiB }"))
        self.assert_ok(self.config("[h2c]", http2="{ max_concurrent_streams: 10 }"))

    @unittest.skipUnless(HAVE_OPENSSL, "needs the openssl command to make test certificates")
    def test_valid_tls_protocol_lists(self):
        for protocols in ("[http1, h2]", "[h2]"):
            with self.subTest(protocols=protocols):
                self.assert_ok(self.config(protocols, tls=True))

    @unittest.skipUnless(HAVE_OPENSSL, "needs the openssl command to make test certificates")
    def test_h2c_on_a_tls_listener_is_an_error(self):
        message = self.assert_error_at(self.config("[http1, h2c]", tls=True), "protocols",
                                       r"listeners\[0\]\.protocols(\[\d+\])?")
        self.assertRegex(message, r"h2c|tls|TLS", "the message should say what is wrong")

    def test_h2_without_tls_is_an_error(self):
        message = self.assert_error_at(self.config("[http1, h2]"), "protocols",
                                       r"listeners\[0\]\.protocols(\[\d+\])?")
        self.assertRegex(message, r"\bh2\b|tls|TLS", "the message should say what is wrong")

    def test_unknown_protocol_is_an_error(self):
        self.assert_error_at(self.config("[http1, spdy]"), "protocols",
                             r"listeners\[0\]\.protocols(\[\d+\])?")

    def test_http2_settings_out_of_range_are_errors(self):
        # RFC 9113 6.5.2: SETTINGS_MAX_FRAME_SIZE is 16384 to 16777215, SETTINGS_INITIAL_WINDOW_SIZE
        # at most 2^31-1; a listener advertising anything else would break every client.
        self.assert_error_at(self.config("[h2c]", http2="{ max_frame_size: 1KiB }"), "http2",
                             r"listeners\[0\]\.http2\.max_frame_size")
        self.assert_error_at(self.config("[h2c]", http2="{ initial_window: 4GiB }"), "http2",
                             r"listeners\[0\]\.http2\.initial_window")
        path, code, out, err = check(self.config("[h2c]", http2="{ max_streams: 10 }"))
        self.assertNotEqual(code, 0)
        self.assertIn("listeners[0].http2.max_streams: unknown key", err)


# --- cleartext HTTP/2 with prior knowledge -------------------------------------------------

PLAIN = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: plain
    listen: 127.0.0.1:{port}
    protocols: [http1, h2c]
    routes:
      - {{ name: app, match: {{ prefix: /app }}, upstream: app, timeout: 60s }}
      - {{ name: limited, match: {{ prefix: /limited }}, upstream: app,
          rate_limit: {{ rate: 1/m, burst: 1, key: route }} }}
      - {{ name: gone, match: {{ prefix: /gone }}, upstream: dead }}
      - {{ name: py, match: {{ prefix: /py }}, upstream: py, timeout: 60s }}
  - name: small
    listen: 127.0.0.1:{small_port}
    protocols: [h2c]
    limits: {{ max_header_bytes: 4KiB, max_headers: 20, max_body_bytes: 1MiB }}
    http2: {{ max_concurrent_streams: 10, initial_window: 64KiB, max_frame_size: 32KiB }}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app }}
upstreams:
  - name: app
    endpoints: [{upstream}]
  - name: dead
    endpoints: [127.0.0.1:{dead_port}]
  - name: py
    endpoints: [{py}]
"""


@NEEDS_HPACK
class H2c(unittest.TestCase):
    """One bulwark: listener `plain` ([http1, h2c], defaults) and `small` ([h2c], tight limits
    and its own http2 block), in front of bulwark-testd, a Python backend and a dead port."""

    @classmethod
    def setUpClass(cls):
        cls.backend = Testd()
        cls.py = PyBackend()
        try:
            cls.proxy = start_bulwark(PLAIN, upstream=cls.backend.address, py=cls.py.address,
                                      small_port=free_port(), dead_port=free_port())
        except BaseException:
            cls.backend.stop()
            cls.py.stop()
            raise
        cls.port = cls.proxy.port
        cls.small_port = cls.proxy.values["small_port"]

    @classmethod
    def tearDownClass(cls):
        code = cls.proxy.stop()
        cls.backend.stop()
        cls.py.stop()
        if code not in (0, None):
            raise AssertionError("bulwark exited with %s:\n%s" % (code, cls.proxy.stderr_text()[-3000:]))

    def h2(self, port=None, **kw):
        c = H2Conn(port or self.port, **kw)
        self.addCleanup(c.close)
        return c

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def test_settings_advertise_the_listener_http2_block(self):
        c = self.h2()
        self.assertEqual(c.server_settings.get(SETTINGS_MAX_CONCURRENT_STREAMS), 100, c.server_settings)
        self.assertEqual(c.server_settings.get(SETTINGS_INITIAL_WINDOW_SIZE, 65535), 256 * 1024)
        self.assertEqual(c.server_settings.get(SETTINGS_MAX_FRAME_SIZE, 16384), 16384)
        c = self.h2(self.small_port)
        self.assertEqual(c.server_settings.get(SETTINGS_MAX_CONCURRENT_STREAMS), 10, c.server_settings)
        self.assertEqual(c.server_settings.get(SETTINGS_INITIAL_WINDOW_SIZE, 65535), 64 * 1024)
        self.assertEqual(c.server_settings.get(SETTINGS_MAX_FRAME_SIZE, 16384), 32 * 1024)

    @unittest.skipUnless(HAVE_CURL, "curl is not installed")
    def test_curl_prior_knowledge(self):
        code, version, body, p = curl("--http2-prior-knowledge", self.url("/app/curl?headers=1"))
        self.assertEqual((code, version), ("200", "2"), p.stderr)
        seen = json.loads(body)
        self.assertEqual((seen["method"], seen["url"], seen["version"]), ("GET", "/app/curl?headers=1", "1.1"))
        headers = {k.lower(): v for k, v in seen["headers"]}
        self.assertEqual(headers.get("host"), "127.0.0.1:%d" % self.port)  # from :authority
        self.assertFalse([k for k in headers if k.startswith(":")], headers)

    @unittest.skipUnless(HAVE_CURL, "curl is not installed")
    def test_http1_still_served_on_the_same_listener(self):
        status, headers, body = request(self.port, "GET", "/app/h1?size=100")
        self.assertEqual((status, len(body)), (200, 100))
        code, version, body, p = curl("--http1.1", self.url("/app/h1"))
        self.assertEqual((code, version), ("200", "1.1"), p.stderr)

    def test_first_bytes_split_across_segments(self):
        # "P" could start the preface: bulwark must wait for more before choosing HTTP/1.
        s = connect(self.port)
        s.sendall(b"P")
        time.sleep(0.2)
        s.sendall(b"OST /app/split HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
        status, headers, body = Reader(s).read_response()
        s.close()
        self.assertEqual(status, 200, "HTTP/1 whose first byte came alone: %r %r" % (headers, body[:200]))
        self.assertEqual(headers.get("x-testd-body-bytes"), "2")
        # The preface in three pieces is still HTTP/2.
        c = self.h2(preface_chunks=[3, 10])
        s = c.get("/app/split-preface")
        self.assertEqual(s.status, 200, c.describe())

    def test_h2c_only_listener_does_not_serve_http1(self):
        seen = self.backend.stats()["requests"]
        s = connect(self.small_port, timeout=5)
        s.sendall(b"GET /http1 HTTP/1.1\r\nHost: x\r\n\r\n")
        data, closed = b"", False
        deadline = time.time() + 5
        try:
            while time.time() < deadline:
                chunk = s.recv(4096)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            pass
        s.close()
        self.assertFalse(data.startswith(b"HTTP/1.1 2"), data[:200])
        self.assertTrue(closed, "an HTTP/1 request on an h2c-only listener left the connection open: %r" % data[:200])
        self.assertEqual(self.backend.stats()["requests"], seen + 1)  # only the /__stats calls

    def test_request_mapping_and_response_head(self):
        c = self.h2()
        sid = c.request("POST", "/app/map?headers=1", authority="svc.example:8443",
                        headers=[("x-custom", "v1"), ("cookie", "a=1"), ("cookie", "b=2"),
                                 ("content-type", "text/plain")],
                        body=b"hello h2")
        s = c.wait(sid)
        self.assertEqual(s.status, 200, c.describe())
        seen = json.loads(s.body)
        self.assertEqual((seen["method"], seen["url"], seen["version"]), ("POST", "/app/map?headers=1", "1.1"))
        headers = collections.defaultdict(list)
        for k, v in seen["headers"]:
            headers[k.lower()].append(v)
        self.assertEqual(headers["host"], ["svc.example:8443"])  # :authority -> Host
        self.assertEqual(headers["x-custom"], ["v1"])
        # RFC 9113 8.2.3: split cookie fields are joined with "; " for HTTP/1.1.
        self.assertEqual(headers["cookie"], ["a=1; b=2"])
        self.assertFalse([k for k in headers if k.startswith(":")], dict(headers))
        self.assertEqual(s.header("x-testd-body-bytes"), "8")  # the body went up, END_STREAM ended it
        self.assertEqual(s.header("x-testd-body-crc32"), crc_hex(b"hello h2"))
        # RFC 9113 8.2: lower-case names, no connection-specific fields in the response head.
        names = [k for k, _ in s.headers]
        self.assertEqual(names, [k.lower() for k in names])
        for banned in ("connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"):
            self.assertNotIn(banned, names)
        self.assertEqual(s.header("x-testd-name"), "testd")
        # A chunked upstream response arrives whole, without transfer-encoding.
        s = c.get("/app/chunked?chunked=1&size=100000")
        self.assertEqual((s.status, len(s.body)), (200, 100000), c.describe())
        self.assertEqual(crc_hex(s.body), crc_hex(pattern(100000)))
        self.assertNotIn("transfer-encoding", [k for k, _ in s.headers])
        # HEAD: the head only, END_STREAM on it.
        s = c.wait(c.request("HEAD", "/app/head?size=1000"))
        self.assertEqual((s.status, s.header("content-length"), s.received, s.ended), (200, "1000", 0, True))
        self.assertEqual(c.goaways, [])

    def test_upstream_trailers_come_back_as_trailing_headers(self):
        c = self.h2()
        s = c.get("/py/trailers", headers=[("te", "trailers")])
        self.assertEqual(s.status, 200, c.describe())
        self.assertEqual(s.body, b"hello, trailers")
        self.assertTrue(s.ended)
        self.assertIsNotNone(s.trailers, "no trailing HEADERS frame: " + s.describe())
        trailers = dict(s.trailers)
        self.assertEqual((trailers.get("x-checksum"), trailers.get("x-status")), ("1234", "done"))
        self.assertFalse([k for k in trailers if k.startswith(":")], trailers)
        self.assertNotIn("transfer-encoding", [k for k, _ in s.headers])

    def test_streams_are_multiplexed_gauged_and_counted(self):
        before = settled_requests_total(self.proxy, "plain")
        c = self.h2()
        slow = [c.request("GET", "/app/slow%d?delay=1000&size=1000" % i) for i in range(2)]
        fast = c.request("GET", "/app/fast?size=10")
        s = c.wait(fast, timeout=5)
        self.assertEqual(s.status, 200, c.describe())
        self.assertFalse([sid for sid in slow if c.streams[sid].done],
                         "the fast stream waited for the slow ones: " + c.describe())
        wait_for(lambda: open_streams(self.proxy, "plain") == 2, timeout=2,
                 what="bulwark_http2_streams{side=downstream,name=plain} == 2 while two are in flight")
        # /status shows the listener's HTTP/2 connections and their streams.
        _, _, body = request(self.proxy.admin_port, "GET", "/status")
        listeners = {l["name"]: l for l in json.loads(body)["listeners"]}
        self.assertEqual(listeners["plain"]["http2"]["streams"], 2, listeners)
        self.assertGreaterEqual(listeners["plain"]["http2"]["connections"], 1, listeners)
        self.assertGreater(listeners["plain"]["http2"]["streams_per_connection"], 0, listeners)
        for sid in slow:
            s = c.wait(sid)
            self.assertEqual((s.status, len(s.body)), (200, 1000), c.describe())
        wait_for(lambda: open_streams(self.proxy, "plain") == 0, timeout=2, what="the streams gauge back to 0")
        wait_for(lambda: requests_total(self.proxy, "plain") == before + 3, timeout=2,
                 what="bulwark_requests_total{listener=plain} +3 (one per stream)")

    def test_unknown_method_is_refused_on_its_stream(self):
        # Found by fuzz_h2: a method llhttp does not name (or a lower-case one) must be a 400 on
        # its stream, not a crash; the connection goes on serving.
        c = self.h2()
        for method in ("FROB", "get", "PRI"):
            s = c.wait(c.request(method, "/app/x"), timeout=5)
            self.assertEqual((s.status, s.header("x-bulwark-reason")), (400, "bad-request"), c.describe())
        s = c.wait(c.request("GET", "/app/x?size=10"), timeout=5)
        self.assertEqual((s.status, len(s.body)), (200, 10), c.describe())

    def test_request_trailers_cannot_set_what_bulwark_sets(self):
        # Found by fuzz_h2: trailers of an HTTP/2 request follow the HTTP/1 rule: no Host,
        # X-Forwarded-*, X-Request-Id or framing fields among the forwarded trailers.
        c = self.h2()
        sid = c.request("POST", "/py/echo", body=b"abc", end_stream=False)
        # (nghttp2 itself resets a stream whose trailers carry host or content-length.)
        c.send_block(sid, c.encoder.encode([("x-ok", "1"), ("x-forwarded-for", "6.6.6.6"),
                                            ("x-request-id", "forged"), ("x-forwarded-proto", "gopher")]), True)
        s = c.wait(sid, timeout=5)
        self.assertEqual(s.status, 200, c.describe())
        raw = self.py.last_raw
        tail = raw[raw.index(b"0\r\n", raw.index(b"\r\n\r\n")):]
        self.assertIn(b"x-ok: 1", tail)
        for forged in (b"6.6.6.6", b"forged", b"gopher"):
            self.assertNotIn(forged, tail, raw)

    def test_grpc_local_replies_and_grpc_timeout(self):
        # A gRPC client (content-type application/grpc) gets Bulwark's own answers as gRPC
        # errors: HTTP 200, trailers-only, grpc-status; its grpc-timeout bounds the route's 15 s.
        c = self.h2()
        grpc = [("content-type", "application/grpc"), ("te", "trailers")]
        start = time.time()
        slow = c.request("POST", "/app/slow?delay=3000", headers=grpc + [("grpc-timeout", "300m")],
                         body=b"\x00\x00\x00\x00\x00")
        nowhere = c.request("POST", "/nowhere", headers=grpc, body=b"\x00\x00\x00\x00\x00")
        gone = c.request("POST", "/gone", headers=grpc, body=b"\x00\x00\x00\x00\x00")
        for sid in (nowhere, gone, slow):
            c.wait(sid, timeout=5)
        self.assertLess(time.time() - start, 2.5, "grpc-timeout 300m did not bound the request")
        for sid, code, reason in ((slow, "4", "upstream-timeout"), (nowhere, "12", "no-route"),
                                  (gone, "14", "upstream-connect-failure")):
            s = c.streams[sid]
            self.assertEqual((s.status, s.header("grpc-status"), s.header("x-bulwark-reason"),
                              s.header("content-type"), s.body),
                             (200, code, reason, "application/grpc", b""), c.describe())

    def test_local_replies_stay_on_their_streams(self):
        c = self.h2()
        ok = c.request("GET", "/app/ok?delay=300&size=5000")
        nowhere = c.request("GET", "/nowhere")
        limited = [c.request("GET", "/limited/%d" % i) for i in range(2)]
        gone = c.request("GET", "/gone")
        for sid in [nowhere, gone] + limited + [ok]:
            c.wait(sid)
        s = c.streams[nowhere]
        self.assertEqual((s.status, s.header("x-bulwark-reason")), (404, "no-route"), c.describe())
        self.assertEqual(json.loads(s.body)["status"], 404)
        s = c.streams[gone]
        self.assertEqual((s.status, s.header("x-bulwark-reason")), (502, "upstream-connect-failure"), c.describe())
        got = sorted((c.streams[sid].status, c.streams[sid].header("x-bulwark-reason")) for sid in limited)
        self.assertEqual(got, [(200, None), (429, "rate-limited")], c.describe())
        refused = [c.streams[sid] for sid in limited if c.streams[sid].status == 429][0]
        self.assertIsNotNone(refused.header("retry-after"))
        s = c.streams[ok]
        self.assertEqual((s.status, len(s.body)), (200, 5000), c.describe())
        self.assertEqual(crc_hex(s.body), crc_hex(pattern(5000)))
        # The connection goes on.
        s = c.get("/app/after")
        self.assertEqual(s.status, 200, c.describe())
        self.assertEqual(c.goaways, [])
        self.assertFalse(c.closed)

    @unittest.skipUnless(HAVE_H2LOAD, "h2load (nghttp2-client) is not installed")
    def test_h2load_2000_requests_on_4_connections(self):
        before = settled_requests_total(self.proxy, "plain")
        p = run(["h2load", "-n", "2000", "-c", "4", "-m", "16", self.url("/app/load")], timeout=60)
        summary = h2load_summary(p.stdout)
        self.assertIsNotNone(summary, p.stdout[-2000:] + p.stderr[-2000:])
        self.assertEqual(summary, (2000, 0, 0, 2000), p.stdout[-1500:])
        wait_for(lambda: requests_total(self.proxy, "plain") == before + 2000, timeout=3,
                 what="bulwark_requests_total{listener=plain} +2000")
        wait_for(lambda: open_streams(self.proxy, "plain") == 0, timeout=2, what="the streams gauge back to 0")

    @unittest.skipUnless(HAVE_NGHTTP, "nghttp (nghttp2-client) is not installed")
    def test_nghttp_fetches_concurrently_on_one_connection(self):
        p = run(["nghttp", "-ns", self.url("/app/slow?delay=700&size=200"), self.url("/app/quick?size=100"),
                 self.url("/missing")], timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # The statistics table is sorted by completion: "id responseEnd requestStart process code size path".
        rows = re.findall(r"(?m)^\s*\d+\s+\S+\s+\S+\s+\S+\s+(\d{3})\s+\S+\s+(\S+)\s*$", p.stdout)
        self.assertEqual(dict((path, code) for code, path in rows),
                         {"/missing": "404", "/app/quick?size=100": "200", "/app/slow?delay=700&size=200": "200"},
                         p.stdout)
        self.assertEqual(rows[-1][1], "/app/slow?delay=700&size=200", "the slow stream held the others back:\n" + p.stdout)

    @unittest.skipUnless(HAVE_CURL, "curl is not installed")
    def test_upload_8mib_with_curl_through_echo(self):
        data = os.urandom(8 * MIB)
        d = tempfile.mkdtemp(prefix="bulwark-h2-")
        self.addCleanup(shutil.rmtree, d, True)
        src, dst = os.path.join(d, "up"), os.path.join(d, "down")
        with open(src, "wb") as f:
            f.write(data)
        code, version, _, p = curl("--http2-prior-knowledge", "--data-binary", "@" + src, "-o", dst,
                                   "-H", "content-type: application/octet-stream", self.url("/app/echo?echo=1"))
        self.assertEqual((code, version), ("200", "2"), p.stderr)
        with open(dst, "rb") as f:
            back = f.read()
        self.assertEqual((len(back), crc_hex(back)), (len(data), crc_hex(data)))

    def test_upload_8mib_raw_without_content_length(self):
        # Bulwark must keep opening its receive windows (its initial window is 256 KiB).
        data = os.urandom(8 * MIB)
        c = self.h2()
        s = c.wait(c.request("POST", "/app/up", body=data), timeout=30)
        self.assertEqual(s.status, 200, c.describe())
        self.assertEqual((s.header("x-testd-body-bytes"), s.header("x-testd-body-crc32")),
                         (str(len(data)), crc_hex(data)))

    @unittest.skipUnless(HAVE_CURL, "curl is not installed")
    def test_download_32mib_with_curl(self):
        size = 32 * MIB
        d = tempfile.mkdtemp(prefix="bulwark-h2-")
        self.addCleanup(shutil.rmtree, d, True)
        dst = os.path.join(d, "down")
        code, version, _, p = curl("--http2-prior-knowledge", "-o", dst, self.url("/app/down?size=%d" % size))
        self.assertEqual((code, version), ("200", "2"), p.stderr)
        with open(dst, "rb") as f:
            got = f.read()
        self.assertEqual((len(got), crc_hex(got)), (size, crc_hex(pattern(size))))

    def test_client_that_does_not_read_is_not_buffered_for(self):
        # A 96 MiB response to a client that never opens its 64 KiB windows: bulwark may hold
        # a bounded amount, reads the upstream no faster than the client takes it, and the
        # whole body still arrives intact once the client opens the windows.
        size = 96 * MIB
        c = self.h2()
        c.auto_window = False
        with PeakRss(self.proxy.proc.pid) as rss:
            sid = c.request("GET", "/py/big?size=%d" % size)
            c.pump(lambda: c.streams[sid].received >= 65535 or c.streams[sid].done, timeout=5)
            s = c.streams[sid]
            self.assertEqual((s.status, s.received), (200, 65535), c.describe())
            time.sleep(1.5)
            first = self.py.sent[size]
            time.sleep(0.5)
            second = self.py.sent[size]
        self.assertLess(second, 32 * MIB, "bulwark read %.1f MiB of the upstream response for a client "
                        "that took 64 KiB" % (second / MIB))
        self.assertLess(second - first, MIB, "bulwark kept reading the upstream for a stalled client")
        if not SANITIZED:
            self.assertLess(rss.growth, RSS_LIMIT_KIB, "RSS grew by %d KiB" % rss.growth)
        crc = [zlib.crc32(s.body)]
        s.data = bytearray()
        s.sink = lambda b: crc.__setitem__(0, zlib.crc32(b, crc[0]))
        c.auto_window = True
        c.send(window_update(0, (1 << 31) - 1 - 65535) + window_update(sid, (1 << 31) - 1 - 65535))
        c.pump(lambda: s.done, timeout=60)
        self.assertEqual((s.received, s.ended), (size, True), c.describe())
        self.assertEqual(crc[0], pattern_crc(size), "the body arrived corrupted")

    def test_header_limits_of_the_listener(self):
        seen = self.backend.stats()["requests"]
        for what, headers in [("30 fields (max_headers 20)", [("x-h%d" % i, "v") for i in range(30)]),
                              ("a 6 KiB field (max_header_bytes 4 KiB)", [("x-big", "a" * 6144)])]:
            c = self.h2(self.small_port)
            sid = c.request("GET", "/limits", headers=headers)
            c.pump(lambda: c.streams[sid].done or c.closed, timeout=5)
            s = c.streams[sid]
            refused = s.status == 431 or s.reset is not None or bool(c.goaways)
            self.assertTrue(refused, "%s: not refused (431, RST_STREAM or GOAWAY): %s" % (what, c.describe()))
        self.assertEqual(self.backend.stats()["requests"], seen + 1, "an over-limit request was forwarded")
        c = self.h2(self.small_port)
        s = c.get("/limits-ok", headers=[("x-h%d" % i, "v") for i in range(10)])
        self.assertEqual(s.status, 200, c.describe())

    def test_body_limit_413(self):
        c = self.h2(self.small_port)
        # Declared too large: refused before any DATA.
        sid = c.request("POST", "/body", headers=[("content-length", str(2 * MIB))], end_stream=False)
        s = c.wait(sid, timeout=5)
        self.assertEqual((s.status, s.header("x-bulwark-reason")), (413, "body-too-large"), c.describe())
        # Undeclared: refused once past 1 MiB.
        c = self.h2(self.small_port)
        sid = c.request("POST", "/body", end_stream=False)
        c.send_data(sid, os.urandom(2 * MIB), stop_on_response=True, timeout=5)
        s = c.wait(sid, timeout=5)
        self.assertEqual((s.status, s.header("x-bulwark-reason")), (413, "body-too-large"), c.describe())

    def test_frame_size_limits(self):
        # max_frame_size 32 KiB on `small`: a 20000-byte DATA frame is fine there...
        c = self.h2(self.small_port)
        sid = c.request("POST", "/frame?echo=1", headers=[("content-length", "20000")], end_stream=False)
        c.send(frame(DATA, END_STREAM, sid, b"x" * 20000))
        s = c.wait(sid)
        self.assertEqual((s.status, s.body), (200, b"x" * 20000), c.describe())
        # ...while on `plain` (16 KiB) a 20000-byte HEADERS frame is a connection error.
        c = self.h2()
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, c.new_stream(),
                     request_block(b"/app/frame", extra=[(b"x-pad", b"a" * 19900)])))
        c.wait_closed()
        self.assertIn(FRAME_SIZE_ERROR, c.goaway_codes(), c.describe())
        self.assertTrue(c.closed, c.describe())


# --- attacks -------------------------------------------------------------------------------

ATTACKS = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: edge
    listen: 127.0.0.1:{port}
    protocols: [h2c]
    http2: {{ max_concurrent_streams: 10 }}
    routes:
      - {{ name: sink, match: {{ prefix: /sink }}, upstream: sink }}
      - {{ name: all, match: {{ prefix: / }}, upstream: app }}
  - name: stall
    listen: 127.0.0.1:{stall_port}
    protocols: [h2c]
    timeouts: {{ idle: 1s, header: 1s }}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app }}
upstreams:
  - name: app
    endpoints: [{upstream}]
  - name: sink
    endpoints: [{sink}]
"""


@NEEDS_HPACK
class Attacks(unittest.TestCase):
    """Each attack on listener `edge` (max_concurrent_streams 10, default limits) ends its
    connection with GOAWAY and counts its reason, while a bystander's stream opened before it
    finishes with 200, a new client gets 200 after it, no stream stays counted, and bulwark's
    peak RSS grows by less than 64 MiB (not under sanitizers). /sink goes to a backend of its
    own to tell whether an attack's request was forwarded."""

    @classmethod
    def setUpClass(cls):
        cls.backend = Testd()
        cls.sink = Testd(name="sink")
        try:
            cls.proxy = start_bulwark(ATTACKS, upstream=cls.backend.address, sink=cls.sink.address,
                                      stall_port=free_port())
        except BaseException:
            cls.backend.stop()
            cls.sink.stop()
            raise
        cls.port = cls.proxy.port

    @classmethod
    def tearDownClass(cls):
        code = cls.proxy.stop()
        cls.backend.stop()
        cls.sink.stop()
        if code not in (0, None):
            raise AssertionError("bulwark exited with %s:\n%s" % (code, cls.proxy.stderr_text()[-3000:]))

    def setUp(self):
        if self.proxy.proc.poll() is not None:
            self.fail("bulwark is gone (exit %s): %s" % (self.proxy.proc.returncode, self.proxy.stderr_text()[-2000:]))

    def h2(self, port=None, **kw):
        c = H2Conn(port or self.port, **kw)
        self.addCleanup(c.close)
        return c

    def errors(self, reason, listener="edge"):
        return errors_total(self.proxy, listener, reason)

    def sink_forwarded(self):
        return self.sink.stats()["requests"]

    @contextlib.contextmanager
    def attack(self, what, reason, listener="edge"):
        """Around an attack: a bystander stream in flight on another connection, the peak RSS,
        the reason's counter; afterwards the bystander's 200, a new client's 200, the streams
        gauge back to 0."""
        port = self.port if listener == "edge" else self.proxy.values["stall_port"]
        bystander = self.h2(port)
        by = bystander.request("GET", "/bystander?delay=500&size=3000")
        before = self.errors(reason, listener)
        with PeakRss(self.proxy.proc.pid) as rss:
            yield
        self.assertEqual(self.proxy.proc.poll(), None, "bulwark died in the %s: %s"
                         % (what, self.proxy.stderr_text()[-2000:]))
        wait_for(lambda: self.errors(reason, listener) > before, timeout=3,
                 what='bulwark_http2_protocol_errors_total{side="downstream",name="%s",reason="%s"} to grow '
                      'after the %s' % (listener, reason, what))
        s = bystander.wait(by, timeout=10)
        self.assertEqual((s.status, len(s.body)), (200, 3000),
                         "the bystander's stream after the %s: %s" % (what, bystander.describe()))
        bystander.close()
        c = self.h2(port)
        s = c.get("/after?size=1000")
        self.assertEqual((s.status, len(s.body)), (200, 1000),
                         "a new client after the %s: %s" % (what, c.describe()))
        c.close()
        if not SANITIZED:
            self.assertLess(rss.growth, RSS_LIMIT_KIB, "the %s grew bulwark's RSS by %.1f MiB"
                            % (what, rss.growth / 1024))
        wait_for(lambda: open_streams(self.proxy, listener) == 0, timeout=3,
                 what="bulwark_http2_streams{name=%s} back to 0 after the %s" % (listener, what))

    def assert_goaway(self, c, codes, what):
        c.wait_closed(timeout=5)
        got = [g for g in c.goaways if g.code in codes]
        self.assertTrue(got, "%s: expected GOAWAY with %s, got: %s"
                        % (what, " or ".join(error_name(x) for x in codes), c.describe()))
        self.assertTrue(c.closed, "%s: GOAWAY but the connection stayed open: %s" % (what, c.describe()))

    def test_rapid_reset(self):
        # A few cancelled streams are what browsers do: no GOAWAY for them.
        c = self.h2()
        for _ in range(5):
            sid = c.new_stream()
            c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, request_block(b"/cancelled?delay=200"))
                   + rst_stream(sid, CANCEL))
        s = c.get("/after-cancels")
        self.assertEqual(s.status, 200, c.describe())
        self.assertEqual(c.goaways, [], "five cancelled streams were taken for an attack")
        c.close()
        with self.attack("rapid reset", "rapid_reset"):
            c = self.h2()
            block = request_block(b"/rapid")
            for _ in range(10):  # 10 x 100 HEADERS + RST_STREAM pairs
                out = []
                for _ in range(100):
                    sid = c.new_stream()
                    out.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, block) + rst_stream(sid, CANCEL))
                if not c.try_send(b"".join(out)):
                    break
                c.poll()
                if c.goaways or c.closed:
                    break
            self.assert_goaway(c, {ENHANCE_YOUR_CALM}, "1000 HEADERS+RST_STREAM pairs")

    def test_continuation_flood(self):
        forwarded = self.sink_forwarded()
        with self.attack("CONTINUATION flood", "continuation_flood"):
            c = self.h2()
            sid = c.new_stream()
            c.send(frame(HEADERS, END_STREAM, sid, request_block(b"/sink/continuation")))  # no END_HEADERS
            piece = frame(CONTINUATION, 0, sid, hpack_literal(b"x-flood", b"a" * 4080))  # 4 KiB each
            # 128 KiB of header block (twice max_header_bytes), then a pause for the verdict,
            # then up to 16 MiB more, paced.
            total = 16 * MIB
            c.try_send(piece * 32)
            c.pump(lambda: bool(c.goaways) or c.closed, timeout=2)
            sent = 32 * len(piece)
            while sent < total and not (c.goaways or c.closed):
                if not c.try_send(piece * 64):
                    break
                sent += 64 * len(piece)
                c.poll(0.005)
            self.assert_goaway(c, {ENHANCE_YOUR_CALM, PROTOCOL_ERROR, COMPRESSION_ERROR},
                               "endless CONTINUATION frames")
            self.assertLess(sent, total, "bulwark took 16 MiB of one header block without closing")
        self.assertEqual(self.sink_forwarded(), forwarded + 1, "the flooded request was forwarded")

    def test_hpack_bomb(self):
        forwarded = self.sink_forwarded()
        with self.attack("HPACK bomb", "header_list_too_large"):
            c = self.h2()
            table = c.server_settings.get(SETTINGS_HEADER_TABLE_SIZE, 4096)
            value = min(4000, table - 32 - len(b"x-bomb"))
            if value < 64:
                self.skipTest("bulwark's HPACK table (%d bytes) is too small for a bomb" % table)
            # One dynamic-table entry of ~4 KB, then 1-byte references to it: ~48 KB on the
            # wire (under max_header_bytes) that decode to ~180 MB.
            head = request_block(b"/sink/bomb") + hpack_literal(b"x-bomb", b"b" * value, index=True)
            block = head + hpack_indexed(62) * (3 * 16384 - len(head))
            sid = c.new_stream()
            c.send(frame(HEADERS, END_STREAM, sid, block[:16384]) +
                   frame(CONTINUATION, 0, sid, block[16384:32768]) +
                   frame(CONTINUATION, END_HEADERS, sid, block[32768:]))
            s = c.streams[sid]
            c.pump(lambda: s.done or c.closed or (s.status is not None), timeout=10)
            refused = (s.reset is not None or (s.status is not None and 400 <= s.status < 500)
                       or bool(set(c.goaway_codes()) & {COMPRESSION_ERROR, ENHANCE_YOUR_CALM, PROTOCOL_ERROR}))
            self.assertTrue(refused, "an HPACK bomb (~180 MB of header fields) was not refused: " + c.describe())
        self.assertEqual(self.sink_forwarded(), forwarded + 1, "the bomb was forwarded")

    def test_too_many_concurrent_streams(self):
        # The limit is announced in SETTINGS (10 here); a client that opens more streams than it
        # acknowledged is ended with GOAWAY PROTOCOL_ERROR (nghttp2's connection error for
        # RFC 9113 5.1.2), counted as too_many_streams. Other clients are not affected.
        with self.attack("streams past max_concurrent_streams", "too_many_streams"):
            c = self.h2()
            self.assertEqual(c.server_settings.get(SETTINGS_MAX_CONCURRENT_STREAMS), 10, c.server_settings)
            for i in range(10):
                c.request("GET", "/slow%d?delay=1000&size=100" % i)
            for i in range(3):
                c.request("GET", "/extra%d" % i)
            self.assert_goaway(c, {PROTOCOL_ERROR, ENHANCE_YOUR_CALM}, "3 streams past max_concurrent_streams")

    def test_settings_flood(self):
        with self.attack("SETTINGS flood", "settings_flood"):
            c = self.h2(rcvbuf=16384)  # a client that does not read: its window fills at once
            c.try_send(settings_frame({SETTINGS_ENABLE_PUSH: 0}) * 50000)
            self.assert_goaway(c, {ENHANCE_YOUR_CALM}, "50000 SETTINGS frames, ACKs unread")

    def test_ping_flood(self):
        with self.attack("PING flood", "ping_flood"):
            c = self.h2(rcvbuf=16384)
            c.try_send(ping() * 50000)
            self.assert_goaway(c, {ENHANCE_YOUR_CALM}, "50000 PING frames, ACKs unread")

    def test_header_block_left_unfinished(self):
        # A client that starts a header block (HEADERS without END_HEADERS) and stops holds the
        # connection (only CONTINUATION may follow): it ends after timeouts.header (1 s here).
        with self.attack("unfinished header block", "protocol_error", listener="stall"):
            c = self.h2(self.proxy.values["stall_port"])
            start = time.time()
            c.send(frame(HEADERS, 0, c.new_stream(), request_block(b"/half")))
            self.assert_goaway(c, {PROTOCOL_ERROR}, "a header block left unfinished")
            self.assertGreater(time.time() - start, 0.5, "closed before timeouts.header")

    def test_zero_window_stall(self):
        # Listener `stall` has timeouts.idle 1s. The client's streams get a window of 0 and it
        # never sends WINDOW_UPDATE: bulwark may send the head, no DATA, and must give up.
        with self.attack("zero-window stall", "window_stall", listener="stall"):
            c = self.h2(self.proxy.values["stall_port"], settings={SETTINGS_INITIAL_WINDOW_SIZE: 0})
            c.auto_window = False
            start = time.time()
            sid = c.request("GET", "/stalled?size=1000000")
            s = c.streams[sid]
            c.pump(lambda: s.reset is not None or c.closed, timeout=8)
            elapsed = time.time() - start
            self.assertTrue(s.reset is not None or c.closed,
                            "a stream stalled on a zero window was held for 8 s: " + c.describe())
            self.assertGreater(elapsed, 0.5, "closed before the 1 s idle timeout: " + c.describe())
            self.assertEqual(s.received, 0, "bulwark sent DATA into a zero window")


# --- TLS: h2 by ALPN -----------------------------------------------------------------------

TLS = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: secure
    listen: 127.0.0.1:{port}
    protocols: [http1, h2]
    tls: {{ cert: "{cert}", key: "{key}" }}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app }}
  - name: h2only
    listen: 127.0.0.1:{h2_port}
    protocols: [h2]
    tls: {{ cert: "{cert}", key: "{key}" }}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app }}
upstreams:
  - name: app
    endpoints: [{upstream}]
"""


def tls_context(alpn):
    ctx = ssl.create_default_context(cafile=pki().ca)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


@unittest.skipUnless(HAVE_OPENSSL, "needs the openssl command to make test certificates")
class H2Tls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.backend = Testd()
        try:
            cls.proxy = start_bulwark(TLS, upstream=cls.backend.address, cert=pki().server_cert,
                                      key=pki().server_key, h2_port=free_port())
        except BaseException:
            cls.backend.stop()
            raise
        cls.port = cls.proxy.port
        cls.h2_port = cls.proxy.values["h2_port"]

    @classmethod
    def tearDownClass(cls):
        code = cls.proxy.stop()
        cls.backend.stop()
        if code not in (0, None):
            raise AssertionError("bulwark exited with %s:\n%s" % (code, cls.proxy.stderr_text()[-3000:]))

    def url(self, path, port=None):
        return "https://localhost:%d%s" % (port or self.port, path)

    @unittest.skipUnless(HAVE_CURL, "curl is not installed")
    def test_curl_gets_h2_by_alpn_and_http11_when_asked(self):
        code, version, body, p = curl("--http2", "--cacert", pki().ca, self.url("/tls?headers=1"))
        self.assertEqual((code, version), ("200", "2"), p.stderr)
        headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
        self.assertEqual(headers.get("x-forwarded-proto"), "https")
        self.assertEqual(headers.get("host"), "localhost:%d" % self.port)
        code, version, body, p = curl("--http1.1", "--cacert", pki().ca, self.url("/tls"))
        self.assertEqual((code, version), ("200", "1.1"), p.stderr)

    def test_h2_preferred_and_http11_without_alpn(self):
        # The client lists http/1.1 first: the server's preference, h2, wins.
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock = tls_context(["http/1.1", "h2"]).wrap_socket(raw, server_hostname="localhost")
        self.assertEqual(sock.selected_alpn_protocol(), "h2")
        sock.close()
        # No ALPN at all: HTTP/1.1 on a listener with http1.
        c = http.client.HTTPSConnection("localhost", self.port, timeout=10, context=tls_context(None))
        c.request("GET", "/no-alpn")
        r = c.getresponse()
        r.read()
        self.assertEqual(r.status, 200)
        c.close()

    @NEEDS_HPACK
    def test_raw_h2_over_tls(self):
        c = H2Conn(self.port, ssl_context=tls_context(["h2"]))
        self.addCleanup(c.close)
        self.assertEqual(c.sock.selected_alpn_protocol(), "h2")
        s = c.get("/raw?headers=1", scheme="https", authority="localhost:%d" % self.port)
        self.assertEqual(s.status, 200, c.describe())
        headers = {k.lower(): v for k, v in json.loads(s.body)["headers"]}
        self.assertEqual(headers.get("x-forwarded-proto"), "https")
        s = c.wait(c.request("POST", "/raw-up", scheme="https", body=os.urandom(MIB)), timeout=20)
        self.assertEqual((s.status, s.header("x-testd-body-bytes")), (200, str(MIB)), c.describe())

    def test_h2_only_listener_refuses_http11(self):
        raw = socket.create_connection(("127.0.0.1", self.h2_port), timeout=5)
        try:
            sock = tls_context(["http/1.1"]).wrap_socket(raw, server_hostname="localhost")
        except (ssl.SSLError, ConnectionError):
            return  # refused in the handshake (no_application_protocol): fine
        self.addCleanup(sock.close)
        self.assertNotEqual(sock.selected_alpn_protocol(), "http/1.1")
        data = b""
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (OSError, ssl.SSLError):
            pass
        self.assertFalse(data.startswith(b"HTTP/1.1 2"), data[:200])

    @unittest.skipUnless(HAVE_CURL, "curl is not installed")
    def test_h2_only_listener_serves_h2(self):
        code, version, _, p = curl("--http2", "--cacert", pki().ca, self.url("/only", self.h2_port))
        self.assertEqual((code, version), ("200", "2"), p.stderr)

    @unittest.skipUnless(HAVE_H2LOAD, "h2load (nghttp2-client) is not installed")
    def test_h2load_over_tls(self):
        p = run(["h2load", "-n", "400", "-c", "2", "-m", "8", "https://127.0.0.1:%d/load" % self.port], timeout=60)
        self.assertIn("Application protocol: h2", p.stdout, p.stdout[-1500:] + p.stderr[-1500:])
        self.assertEqual(h2load_summary(p.stdout), (400, 0, 0, 400), p.stdout[-1500:])


# --- drain and reload ----------------------------------------------------------------------

LIFECYCLE = """
admin: {{ listen: 127.0.0.1:{admin} }}
drain: {{ timeout: 5s }}
access_log: {{ path: "off" }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    protocols: [h2c]
    routes:
{routes}
upstreams:
  - name: a
    endpoints: [{a}]
  - name: b
    endpoints: [{b}]
"""
ROUTES_A = "      - { name: v1, match: { prefix: /v1 }, upstream: a }\n"
ROUTES_B = ROUTES_A + "      - { name: v2, match: { prefix: /v2 }, upstream: b }\n"


@NEEDS_HPACK
class Lifecycle(unittest.TestCase):
    def setUp(self):
        self.a = Testd(name="a")
        self.b = Testd(name="b")
        self.addCleanup(self.b.stop)
        self.addCleanup(self.a.stop)
        self.proxy = start_bulwark(LIFECYCLE, a=self.a.address, b=self.b.address, routes=ROUTES_A)
        self.addCleanup(self.proxy.stop)

    def test_sigterm_sends_goaway_and_lets_streams_finish(self):
        c = H2Conn(self.proxy.port)
        self.addCleanup(c.close)
        self.assertEqual(c.get("/v1/warm").status, 200, c.describe())
        slow = c.request("GET", "/v1/slow?delay=1500&size=1000")
        wait_for(lambda: self.proxy.metric("bulwark_inflight_requests", upstream="a") == 1,
                 what="the slow stream in flight")
        self.proxy.signal(signal.SIGTERM)
        signalled = time.time()
        c.pump(lambda: bool(c.goaways), timeout=3)
        self.assertTrue(c.goaways, "no GOAWAY after SIGTERM: " + c.describe())
        self.assertLess(time.time() - signalled, 1.0, "GOAWAY waited for the in-flight stream")
        self.assertFalse(c.streams[slow].done, "the slow stream ended before the GOAWAY: " + c.describe())
        self.assertEqual(c.goaways[-1].code, NO_ERROR, c.describe())
        s = c.wait(slow, timeout=10)
        self.assertEqual((s.status, len(s.body)), (200, 1000), c.describe())
        self.assertGreaterEqual(c.goaways[-1].last_stream, slow, "the final GOAWAY disowns the in-flight stream")
        self.assertTrue(c.wait_closed(timeout=5), "the connection stayed open after the drain: " + c.describe())
        self.assertEqual(self.proxy.wait(10), 0, self.proxy.stderr_text()[-2000:])

    def test_reload_applies_to_new_streams_of_an_open_connection(self):
        c = H2Conn(self.proxy.port)
        self.addCleanup(c.close)
        s = c.get("/v2/before")
        self.assertEqual((s.status, s.header("x-bulwark-reason")), (404, "no-route"), c.describe())
        reloads = self.proxy.metric("bulwark_config_reloads_total", result="success") or 0
        tmp = self.proxy.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.proxy.render(LIFECYCLE, routes=ROUTES_B))
        os.rename(tmp, self.proxy.config_path)
        self.proxy.signal(signal.SIGHUP)
        wait_for(lambda: (self.proxy.metric("bulwark_config_reloads_total", result="success") or 0) > reloads,
                 timeout=5, what="the reload")
        s = c.get("/v2/after")
        self.assertEqual((s.status, s.header("x-testd-name")), (200, "b"), c.describe())
        s = c.get("/v1/after")
        self.assertEqual((s.status, s.header("x-testd-name")), (200, "a"), c.describe())
        self.assertEqual(c.goaways, [], "the reload sent GOAWAY")
        self.assertFalse(c.closed, c.describe())


if __name__ == "__main__":
    unittest.main()
