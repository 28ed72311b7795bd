"""An HTTP/2 (h2c, prior knowledge) backend for the upstream HTTP/2 tests, on python3-h2.

One thread per connection, each running its own small event loop (so delayed answers do not
block other streams). What a request gets depends on its path:
  /echo            200 with the request body; content-length unless the query has `nolength`;
                   trailer x-trailer: done when the query has `trailers`; x-method, x-path,
                   x-authority, x-te, x-body-length echo what arrived
  /status/NNN      status NNN, body "status NNN"
  /slow?ms=N       200 "slow" after N ms
  /refuse          RST_STREAM(REFUSED_STREAM) at once (not processed)
  /goaway          200 "bye", then GOAWAY with this stream as the last one processed
  /big?size=N      N bytes of harness.pattern(N), sent as the flow-control window allows
anything else      200 "ok"
The backend records connections, streams, the most streams open at once on one connection,
and each request (method, path, headers, body length)."""
import select
import socket
import threading
import time
import urllib.parse

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from harness import pattern


class H2Backend:
    def __init__(self, max_concurrent_streams=100, silent_after_settings=False, ssl_context=None):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.max_concurrent_streams = max_concurrent_streams
        self.silent = silent_after_settings  # never reads after the first SETTINGS: no PING ACK
        self.ssl_context = ssl_context  # TLS (it should offer h2 by ALPN)
        self.alpn = []  # the protocol ALPN chose on each TLS connection
        self.lock = threading.Lock()
        self.connections = 0
        self.streams = 0
        self.max_open = 0
        self.refused = 0
        self.requests = []  # dicts: method, path, headers, body_length
        self.socks = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self.stopped = True
        try:
            self.listener.close()
        except OSError:
            pass
        for s in list(self.socks):
            try:
                s.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.socks.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    # --- one connection ---------------------------------------------------------------------

    def _serve(self, sock):
        if self.ssl_context is not None:
            try:
                sock.settimeout(5)
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            except OSError:
                sock.close()
                return
            with self.lock:
                self.alpn.append(sock.selected_alpn_protocol())
                self.socks.append(sock)
        conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                             validate_inbound_headers=False))
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams})
        conn.initiate_connection()
        pending = {}   # stream id -> (headers dict, bytearray body)
        sends = {}     # stream id -> [remaining bytes, trailers or None]
        timers = []    # (due, stream id, action)
        open_streams = set()
        sock.settimeout(30)  # sends block (the peer's window and socket decide); reads poll
        heard = False  # the client's preface and SETTINGS were read
        try:
            sock.sendall(conn.data_to_send())
            while not self.stopped:
                now = time.time()
                for t in [t for t in timers if t[0] <= now]:
                    timers.remove(t)
                    t[2]()
                self._pump(conn, sends)
                out = conn.data_to_send()
                if out:
                    sock.sendall(out)
                if self.silent and heard:
                    time.sleep(0.01)  # reads nothing more: PINGs go unanswered
                    continue
                pending_tls = getattr(sock, "pending", lambda: 0)()
                if not pending_tls and not select.select([sock], [], [], 0.005)[0]:
                    continue
                data = sock.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    self._event(conn, ev, pending, sends, timers, open_streams)
                heard = True
        except (OSError, h2.exceptions.ProtocolError):
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _event(self, conn, ev, pending, sends, timers, open_streams):
        if isinstance(ev, h2.events.RequestReceived):
            if self.silent:
                return  # never answered
            self._close_done(conn, open_streams)
            open_streams.add(ev.stream_id)
            with self.lock:
                self.streams += 1
                self.max_open = max(self.max_open, len(open_streams))
            pending[ev.stream_id] = (dict(ev.headers), bytearray())
            if ev.stream_ended:
                self._request(conn, ev.stream_id, pending, sends, timers)
        elif isinstance(ev, h2.events.DataReceived):
            if ev.stream_id in pending:
                pending[ev.stream_id][1].extend(ev.data)
            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived):
            if ev.stream_id in pending:
                pending[ev.stream_id][0].update({"trailer:" + k: v for k, v in ev.headers})
        elif isinstance(ev, h2.events.StreamEnded):
            self._request(conn, ev.stream_id, pending, sends, timers)
        elif isinstance(ev, (h2.events.StreamReset,)):
            pending.pop(ev.stream_id, None)
            sends.pop(ev.stream_id, None)
            open_streams.discard(ev.stream_id)
        self._close_done(conn, open_streams)

    def _close_done(self, conn, open_streams):
        for sid in list(open_streams):
            try:
                if conn.streams.get(sid) is None or conn.streams[sid].closed:
                    open_streams.discard(sid)
            except Exception:
                open_streams.discard(sid)

    def _request(self, conn, sid, pending, sends, timers):
        if sid not in pending:
            return
        headers, body = pending.pop(sid)
        path = headers.get(":path", "/")
        url = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        with self.lock:
            self.requests.append({"method": headers.get(":method"), "path": path,
                                  "headers": headers, "body_length": len(body)})

        def respond(status, payload, extra=(), length=True, trailers=None):
            h = [(":status", str(status))] + list(extra)
            if length and trailers is None:
                h.append(("content-length", str(len(payload))))
            conn.send_headers(sid, h, end_stream=False)
            sends[sid] = [bytes(payload), trailers]

        if url.path == "/echo":
            extra = [("x-method", headers.get(":method", "")), ("x-path", path),
                     ("x-authority", headers.get(":authority", "")),
                     ("x-te", headers.get("te", "")), ("x-body-length", str(len(body)))]
            for k, v in headers.items():
                if k.startswith("trailer:"):
                    extra.append(("x-got-" + k[8:], v))
            trailers = [("x-trailer", "done")] if "trailers" in query else None
            respond(200, body, extra, length="nolength" not in query, trailers=trailers)
        elif url.path.startswith("/status/"):
            code = int(url.path.rsplit("/", 1)[1])
            respond(code, b"status %d" % code)
        elif url.path == "/slow":
            ms = int(query.get("ms", ["100"])[0])
            timers.append((time.time() + ms / 1000.0, sid,
                           lambda: respond(200, b"slow") if conn.streams.get(sid) else None))
        elif url.path == "/refuse":
            with self.lock:
                self.refused += 1
            conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
        elif url.path == "/goaway":
            respond(200, b"bye")
            sends[sid].append("goaway")
        elif url.path == "/big":
            respond(200, pattern(int(query.get("size", ["1048576"])[0])))
        else:
            respond(200, b"ok")

    def _pump(self, conn, sends):
        """Sends response bodies as far as the flow-control windows allow."""
        for sid in list(sends):
            item = sends[sid]
            data, trailers = item[0], item[1]
            if not isinstance(data, memoryview):
                data = memoryview(data)  # slices without copies
            try:
                while len(data):
                    window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                    if window <= 0:
                        break
                    conn.send_data(sid, data[:window].tobytes())
                    data = data[window:]
                item[0] = data
                if len(data):
                    continue
                if trailers:
                    conn.send_headers(sid, trailers, end_stream=True)
                else:
                    conn.end_stream(sid)
                if len(item) > 2 and item[2] == "goaway":
                    conn.close_connection(last_stream_id=sid)
            except (h2.exceptions.StreamClosedError, KeyError):
                pass
            del sends[sid]
