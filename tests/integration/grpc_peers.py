"""Real gRPC peers for the gRPC tests: a grpcio server (no protobuf: the handlers take and return
raw bytes) and a client channel helper. grpcio is Debian's python3-grpcio (1.51); it imports only
under /usr/bin/python3. Without it HAVE_GRPC is False and NEEDS_GRPC skips the tests.

The server, EchoServer, serves service `bulwark.test.Echo` on 127.0.0.1 (ephemeral port), in
cleartext (h2c) or, given a certificate and key, over TLS (ALPN h2):

  Unary         echoes the request. A request that starts with `!` carries commands on its first
                line (up to `\\n`, space separated); the rest of the request is the payload:
                  key=NAME        the key that `fail` counts calls under (default: `default`)
                  fail=CODE*N     the first N calls with this key fail with status CODE (a
                                  number, or a name like UNAVAILABLE); later ones go on
                  sleep=MS        sleep MS ms first (in 10 ms steps, stopping when the call is
                                  cancelled: `cancelled` records which keys were)
                  size=K          answer K bytes of pattern(K) instead of the payload
                  trailer=NAME:V  add trailing metadata NAME: V (repeatable)
                Every call also returns, as trailing metadata, each request metadata `x-test-X`
                as `x-echo-X`.
  ServerStream  the request is `N`, `N:SIZE` or `N:SIZE:CODE`: N messages, message i is `i`
                (decimal) padded with `.` to SIZE bytes; then, with CODE, the call fails with
                that status (after its messages: not a trailers-only response).
  ClientStream  the concatenation of every message the client streamed (a first message
                `!key=K fail=CODE*N [early=1]` fails calls as Unary does: see _client_stream).
  Bidi          echoes each message as soon as it arrives.

`calls[METHOD]` counts calls that reached each method (Unary, ServerStream, ...);
`key_calls[KEY]` counts Unary calls per command key; `last_metadata[METHOD]` is the request
metadata of the last call; `peers[METHOD]` the client connections (`ipv4:IP:PORT`) calls came on; `time_remaining[KEY]` the deadline the server saw (None: none).
"""
import collections
import threading
import time
import unittest

try:
    import grpc
    from concurrent import futures
    HAVE_GRPC = True
except ImportError:  # not Debian's python3, or python3-grpcio not installed
    grpc = None
    HAVE_GRPC = False

NEEDS_GRPC = unittest.skipUnless(HAVE_GRPC, "needs grpcio (Debian python3-grpcio, under /usr/bin/python3)")

SERVICE = "bulwark.test.Echo"
MAX_MESSAGE = 8 << 20  # both sides: 1 MiB payloads pass with room to spare

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.enable_retries", 0),           # only Bulwark retries: the server's counts say so
    ("grpc.enable_http_proxy", 0),        # never through an http_proxy from the environment
    ("grpc.use_local_subchannel_pool", 1),  # each channel its own connection
]


def pattern(n):
    """n bytes, byte i is i % 251 (as harness.pattern)."""
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


def status_code(text):
    """A grpc.StatusCode from a number (`14`) or a name (`UNAVAILABLE`)."""
    for code in grpc.StatusCode:
        if text.isdigit() and code.value[0] == int(text):
            return code
        if code.name == text.upper():
            return code
    raise ValueError("unknown status %r" % text)


def command(payload=b"", **commands):
    """A Unary request: `!k=v k=v\\n` + payload. Values that are lists repeat the key."""
    words = []
    for key, value in commands.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            words.append("%s=%s" % (key, v))
    return ("!" + " ".join(words) + "\n").encode() + payload


class EchoServer:
    def __init__(self, workers=16, tls=None, port=0):
        """tls: (cert path, key path) to serve TLS (ALPN h2) instead of cleartext h2c; port: a
        given port (to restart a server where it was) instead of an ephemeral one."""
        self.lock = threading.Lock()
        self.calls = collections.Counter()
        self.key_calls = collections.Counter()
        self.cancelled = collections.Counter()
        self.received = collections.defaultdict(list)  # ClientStream key: bytes each call got
        self.last_metadata = {}
        self.peers = collections.defaultdict(set)  # method: the connections ("ipv4:IP:PORT") calls came on
        self.time_remaining = {}
        self.bidi_log = []  # (time, "in"/"out", message), in order
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi),
        }
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers),
            handlers=[grpc.method_handlers_generic_handler(SERVICE, handlers)],
            options=[("grpc.max_send_message_length", MAX_MESSAGE),
                     ("grpc.max_receive_message_length", MAX_MESSAGE)])
        if tls:
            with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
                credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
            self.port = self.server.add_secure_port("127.0.0.1:%d" % port, credentials)
        else:
            self.port = self.server.add_insecure_port("127.0.0.1:%d" % port)
        if not self.port:
            raise RuntimeError("grpc server could not bind 127.0.0.1:%d" % port)
        self.address = "127.0.0.1:%d" % self.port
        self.server.start()

    def stop(self, grace=None):
        """Stops serving; with `grace` (seconds) calls in flight may finish (GOAWAY first)."""
        self.server.stop(grace=grace).wait(5 + (grace or 0))

    def reset(self):
        with self.lock:
            self.calls.clear()
            self.key_calls.clear()
            self.cancelled.clear()
            self.received.clear()
            self.last_metadata.clear()
            self.peers.clear()
            self.time_remaining.clear()
            self.bidi_log = []

    def _enter(self, method, context):
        with self.lock:
            self.calls[method] += 1
            self.last_metadata[method] = dict(context.invocation_metadata())
            self.peers[method].add(context.peer())

    @staticmethod
    def _echo_metadata(context):
        return [("x-echo-" + k[len("x-test-"):], v) for k, v in context.invocation_metadata()
                if k.startswith("x-test-") and not k.endswith("-bin")]

    def _unary(self, request, context):
        self._enter("Unary", context)
        trailers = self._echo_metadata(context)
        payload, commands = request, []
        if request.startswith(b"!"):
            line, _, payload = request.partition(b"\n")
            commands = [w.split("=", 1) for w in line[1:].decode().split() if "=" in w]
        key = dict(commands).get("key", "default")
        with self.lock:
            self.key_calls[key] += 1
            seen = self.key_calls[key]
            self.time_remaining[key] = context.time_remaining()
        for name, value in commands:
            if name == "trailer":
                k, _, v = value.partition(":")
                trailers.append((k, v))
        for name, value in commands:
            if name == "sleep":
                end = time.monotonic() + int(value) / 1000.0
                while time.monotonic() < end:
                    if not context.is_active():
                        with self.lock:
                            self.cancelled[key] += 1
                        return b""
                    time.sleep(0.01)
            elif name == "fail":
                code, _, times = value.partition("*")
                if seen <= int(times or 1):
                    context.set_trailing_metadata(trailers)
                    context.abort(status_code(code), "failing as told (%d of %s)" % (seen, times))
            elif name == "size":
                payload = pattern(int(value))
        context.set_trailing_metadata(trailers)
        return payload

    def _server_stream(self, request, context):
        self._enter("ServerStream", context)
        count, size, code = (request.decode().split(":") + ["", ""])[:3]
        for i in range(int(count)):
            yield str(i).encode().ljust(int(size or 0), b".")
        if code:
            context.abort(status_code(code), "failing after %s messages" % count)

    def _client_stream(self, request_iterator, context):
        """The concatenation of the messages. A first message `!key=K fail=CODE*N` fails the
        first N calls with key K once every message is in (`received[K]` records each call's
        bytes after that first message); with `early=1` it fails them at once, before
        reading the others."""
        self._enter("ClientStream", context)
        first = next(request_iterator, b"")
        if not first.startswith(b"!"):
            return first + b"".join(request_iterator)
        commands = dict(w.split("=", 1) for w in first[1:].decode().split() if "=" in w)
        key = commands.get("key", "default")
        with self.lock:
            self.key_calls[key] += 1
            seen = self.key_calls[key]
        code, _, times = commands.get("fail", "OK*0").partition("*")
        failing = seen <= int(times or 1)
        if failing and commands.get("early"):
            context.abort(status_code(code), "failing early as told (%d of %s)" % (seen, times))
        rest = b"".join(request_iterator)
        with self.lock:
            self.received[key].append(rest)
        if failing:
            context.abort(status_code(code), "failing as told (%d of %s)" % (seen, times))
        return rest

    def _bidi(self, request_iterator, context):
        self._enter("Bidi", context)
        for message in request_iterator:
            with self.lock:
                self.bidi_log.append((time.monotonic(), "in", message))
            yield message


# --- the client side -----------------------------------------------------------------------

def channel(port, host="127.0.0.1"):
    """An insecure (h2c, prior knowledge) channel to host:port, message limits raised, grpcio's
    own retries and proxies off. Close it (channel.close()) when done."""
    return grpc.insecure_channel("%s:%d" % (host, port), options=CHANNEL_OPTIONS)


class EchoClient:
    """The four methods of bulwark.test.Echo on a channel, bytes in and out."""

    def __init__(self, port):
        self.channel = channel(port)
        path = "/%s/" % SERVICE
        self.unary = self.channel.unary_unary(path + "Unary")
        self.server_stream = self.channel.unary_stream(path + "ServerStream")
        self.client_stream = self.channel.stream_unary(path + "ClientStream")
        self.bidi = self.channel.stream_stream(path + "Bidi")

    def method(self, full_path):
        """A unary callable for any path (a service or method the server does not have)."""
        return self.channel.unary_unary(full_path)

    def close(self):
        self.channel.close()


def metadata_value(call, name):
    """`name` from a call's (or an RpcError's) initial or trailing metadata; None if absent."""
    for md in (call.initial_metadata(), call.trailing_metadata()):
        for k, v in md or ():
            if k == name:
                return v
    return None


def rpc_error(fn, *args, **kwargs):
    """Calls fn; returns the grpc.RpcError it raised (None when it succeeded) and the seconds
    it took."""
    start = time.monotonic()
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as e:
        return e, time.monotonic() - start
    return None, time.monotonic() - start


class Feeder:
    """A request iterator fed one message at a time (for bidi calls): put() a message, end()
    the stream."""
    _END = object()

    def __init__(self):
        self.cond = threading.Condition()
        self.items = collections.deque()

    def put(self, message):
        with self.cond:
            self.items.append(message)
            self.cond.notify()

    def end(self):
        self.put(self._END)

    def __iter__(self):
        return self

    def __next__(self):
        with self.cond:
            while not self.items:
                self.cond.wait()
            item = self.items.popleft()
        if item is self._END:
            raise StopIteration
        return item


def next_with_timeout(iterator, timeout):
    """next(iterator) in a helper thread: (True, value), (False, None) if nothing came within
    `timeout` (the value, when it comes later, is dropped), or the exception it raised."""
    box = {}
    done = threading.Event()

    def run():
        try:
            box["value"] = next(iterator)
        except BaseException as e:  # noqa: B902 -- re-raised in the caller
            box["error"] = e
        done.set()

    threading.Thread(target=run, daemon=True).start()
    if not done.wait(timeout):
        return False, None
    if "error" in box:
        raise box["error"]
    return True, box["value"]
