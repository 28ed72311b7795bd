"""HTTP/2 attacks against a listener (see test_http2.py for the contract): rapid reset,
CONTINUATION flood, HPACK bomb, too many streams, SETTINGS and PING floods, an unfinished
header block and zero-window stalls each end the connection with GOAWAY, are counted in
bulwark_http2_protocol_errors_total, leave other clients served and the process small."""
import contextlib
import time
import unittest

from harness import (free_port, SANITIZED, Testd, wait_for)
from h2_client import (CANCEL, COMPRESSION_ERROR, CONTINUATION, END_HEADERS, END_STREAM,
                       ENHANCE_YOUR_CALM, error_name, frame, H2Conn, HEADERS, hpack_indexed,
                       hpack_literal, MIB, NEEDS_HPACK, ping, PROTOCOL_ERROR, request_block,
                       RSS_LIMIT_KIB, rst_stream, SETTINGS_ENABLE_PUSH, settings_frame,
                       SETTINGS_HEADER_TABLE_SIZE, SETTINGS_INITIAL_WINDOW_SIZE,
                       SETTINGS_MAX_CONCURRENT_STREAMS)
from h2_backend import (errors_total, open_streams, PeakRss, start_bulwark)


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
