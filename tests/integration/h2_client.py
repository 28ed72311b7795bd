"""The raw HTTP/2 client the HTTP/2 tests share (test_http2*.py): frames packed by hand
(RFC 9113 section 6), HPACK from the `hpack` module for ordinary requests and by hand, without
Huffman or indexing, for attack frames. Backends and helpers: h2_backend.py."""
import collections
import shutil
import socket
import ssl
import struct
import time
import unittest


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
