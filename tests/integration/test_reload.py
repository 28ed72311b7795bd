"""Hot config reload: SIGHUP loads the config file again, and a change in the directory that
holds it (rewritten, renamed over, a Kubernetes ConfigMap swap of ..data) is loaded without a
signal. A valid file takes effect for new requests, on open keep-alive connections too, while
requests in flight finish and open connections and tunnels stay open; state of unchanged
upstream blocks (circuit breakers) carries over; listeners come and go. An invalid file, or
one that changes what needs a restart (workers, admin, access_log, redis), is rejected and
the old config keeps serving. Counted in bulwark_config_reloads_total{result} and shown in
/status "reload" and /config.

SIGHUP tests keep their file where no watched directory sees it change: `-c RUN/etc/bulwark.yaml`
is a symlink to a file in a directory of its own, and that file is rewritten before the
signal. So only SIGHUP can load it, and every reload counter is exact (no watcher reload of
the same change before or after the signal)."""
import base64
import json
import os
import shutil
import signal
import tempfile
import threading
import sys
import time
import unittest

from harness import Bulwark, Reader, Testd, connect, free_port, request, wait_for
from test_expect_upgrade import read_ws_frame, ws_frame

RELOADS = "bulwark_config_reloads_total"
# The contract: a watched change takes effect after a ~200 ms debounce; allow up to 3 s (ASan,
# a loaded 2-core CI machine). SIGHUP reloads are waited for the same way.
RELOAD_TIMEOUT = 3.0

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
workers: {workers}
access_log: {{ path: {access_log} }}
{top}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
{routes}
{listeners}
upstreams:
{upstreams}
"""
DEFAULTS = dict(workers=1, access_log='"off"', top="", listeners="")


def routes(*items):
    """Route lines of the first listener: (name, prefix, upstream[, extra flow keys])."""
    return "\n".join("      - { name: %s, match: { prefix: %s }, upstream: %s%s }"
                     % (name, prefix, upstream, (", " + extra[0]) if extra else "")
                     for name, prefix, upstream, *extra in items)


def upstreams(*items):
    """Upstream lines: (name, endpoint address[, extra flow keys])."""
    return "\n".join("  - { name: %s, endpoints: [%s]%s }"
                     % (name, endpoint, (", " + extra[0]) if extra else "")
                     for name, endpoint, *extra in items)


def listener(name, port, upstream):
    return ("  - name: %s\n    listen: 127.0.0.1:%d\n    routes:\n"
            "      - { name: all, match: { prefix: / }, upstream: %s }" % (name, port, upstream))


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


# --- config file layouts (Bulwark's write_config) ---------------------------------------

def outside_link(run_dir, text):
    """RUN/etc/bulwark.yaml -> a file in a directory of its own; RUN/etc holds nothing else."""
    real_dir = tempfile.mkdtemp(prefix="bulwark-reload-conf-")
    real = os.path.join(real_dir, "bulwark.yaml")
    write(real, text)
    os.mkdir(os.path.join(run_dir, "etc"))
    link = os.path.join(run_dir, "etc", "bulwark.yaml")
    os.symlink(real, link)
    return link


def plain_file(run_dir, text):
    """RUN/etc/bulwark.yaml, a regular file alone in its directory (bulwark's stderr and
    access log stay out of the watched directory)."""
    os.mkdir(os.path.join(run_dir, "etc"))
    path = os.path.join(run_dir, "etc", "bulwark.yaml")
    write(path, text)
    return path


CONFIGMAP_FIRST = "..2026_01_01_00_00_00.000000001"


def configmap(run_dir, text):
    """What the kubelet makes of a ConfigMap volume: RUN/etc/bulwark.yaml -> ..data/bulwark.yaml,
    ..data -> ..<timestamp>, the directory with the real file."""
    cm = os.path.join(run_dir, "etc")
    os.mkdir(cm)
    os.mkdir(os.path.join(cm, CONFIGMAP_FIRST))
    write(os.path.join(cm, CONFIGMAP_FIRST, "bulwark.yaml"), text)
    os.symlink(CONFIGMAP_FIRST, os.path.join(cm, "..data"))
    os.symlink(os.path.join("..data", "bulwark.yaml"), os.path.join(cm, "bulwark.yaml"))
    return os.path.join(cm, "bulwark.yaml")


def configmap_swap(config_path, text, stamp):
    """The kubelet's update: a new timestamped directory, `ln -s NEW ..data_tmp && mv -T
    ..data_tmp ..data` (one rename(2)), then the old directory is removed."""
    cm = os.path.dirname(config_path)
    old = os.readlink(os.path.join(cm, "..data"))
    os.mkdir(os.path.join(cm, stamp))
    write(os.path.join(cm, stamp, "bulwark.yaml"), text)
    os.symlink(stamp, os.path.join(cm, "..data_tmp"))
    os.rename(os.path.join(cm, "..data_tmp"), os.path.join(cm, "..data"))
    shutil.rmtree(os.path.join(cm, old))


# --- reload helpers ----------------------------------------------------------------------

def counts(proxy):
    """(success, failure) of bulwark_config_reloads_total; None for a missing series."""
    return (proxy.metric(RELOADS, result="success"), proxy.metric(RELOADS, result="failure"))


def counts_or_zero(proxy):
    return tuple(v or 0 for v in counts(proxy))


def stderr_tail(proxy, n=4):
    return "\n".join(proxy.stderr_text().splitlines()[-n:])


def wait_counts(proxy, success, failure, timeout=RELOAD_TIMEOUT, what="the reload"):
    """Waits until bulwark_config_reloads_total is exactly {success, failure}."""
    deadline = time.time() + timeout
    value = counts(proxy)
    while value != (success, failure) and time.time() < deadline:
        time.sleep(0.02)
        value = counts(proxy)
    if value != (success, failure):
        raise AssertionError(
            "%s: %s{result=success,failure} is %r, expected (%d, %d) within %.1f s; stderr ends:\n%s"
            % (what, RELOADS, value, success, failure, timeout, stderr_tail(proxy)))


def sighup(proxy, text):
    """Rewrites the file the SIGHUP tests' config symlink points at, then sends SIGHUP."""
    write(os.path.realpath(proxy.config_path), text)
    proxy.signal(signal.SIGHUP)


def status(proxy):
    return json.loads(request(proxy.admin_port, "GET", "/status")[2])


def effective_config(proxy):
    return json.loads(request(proxy.admin_port, "GET", "/config")[2])


def breaker_state(proxy, upstream):
    for u in status(proxy)["upstreams"]:
        if u["name"] == upstream:
            return u["endpoints"][0]["breaker"]["state"]
    raise AssertionError("no upstream %r in /status" % upstream)


def served_by(port, path):
    """(status, x-testd-name) of one request on a new connection."""
    st, h, _ = request(port, "GET", path, timeout=5)
    return st, h.get("x-testd-name")


def try_served_by(port, path):
    """served_by, or ("error", repr) when the connection fails."""
    try:
        return served_by(port, path)
    except (OSError, EOFError) as e:
        return "error", repr(e)


def wait_served_by(port, path, name, timeout=RELOAD_TIMEOUT, what=None):
    """Polls until `path` is answered 200 by the backend `name` (requests on new connections)."""
    deadline = time.time() + timeout
    last = try_served_by(port, path)
    while last != (200, name) and time.time() < deadline:
        time.sleep(0.05)
        last = try_served_by(port, path)
    if last != (200, name):
        raise AssertionError("timed out after %.1f s waiting for %s (last: status %s from %r)"
                             % (timeout, what or "%s answered 200 by %r" % (path, name), last[0], last[1]))


class Client:
    """One keep-alive client connection."""

    def __init__(self, port, timeout=5):
        self.sock = connect(port, timeout)
        self.reader = Reader(self.sock)

    def get(self, path):
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
        return self.reader.read_response()

    def name(self, path):
        """(status, x-testd-name); a broken connection fails the test."""
        try:
            st, h, _ = self.get(path)
        except (OSError, EOFError) as e:
            raise AssertionError("the keep-alive connection broke on GET %s: %r" % (path, e))
        return st, h.get("x-testd-name")

    def close(self):
        self.sock.close()


class Tunnel:
    """A WebSocket upgrade through bulwark to bulwark-testd, which echoes every frame."""

    def __init__(self, port, path="/ws"):
        self.sock = connect(port, 5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n" % (path, key)).encode())
        self.reader = Reader(self.sock)
        _, st, _ = self.reader.read_head()
        if st != 101:
            raise AssertionError("the upgrade got %d, not 101" % st)

    def echo(self, payload):
        """(opcode, payload) of the frame echoed back; a broken tunnel fails the test."""
        try:
            self.sock.sendall(ws_frame(payload, opcode=2))
            return read_ws_frame(self.reader)
        except (OSError, EOFError) as e:
            raise AssertionError("the tunnel broke: %r" % e)

    def close(self):
        self.sock.close()


class Load:
    """Client threads, each on one keep-alive connection, paced at `rate` requests per second
    (all threads together), cycling through `paths`; anything but a 200 response is a failure
    (a connection error too: the thread then reconnects)."""

    def __init__(self, port, paths, threads, rate):
        self.port, self.paths, self.interval = port, paths, threads / rate
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        self.started = self.stopped = None

    def start(self):
        self.started = time.time()
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(10)
        if self.stopped is None:
            self.stopped = time.time()

    def rate(self):
        return self.ok / ((self.stopped or time.time()) - self.started)

    def summary(self):
        return "%d ok, %d failed%s" % (self.ok, len(self.failures),
                                       "; first: " + "; ".join(self.failures[:5]) if self.failures else "")

    def _fail(self, what):
        with self.lock:
            self.failures.append("%.3f s: %s" % (time.time() - self.started, what))

    def _run(self, index):
        client = None
        i = index
        next_at = time.time()
        while not self.stop_event.is_set():
            now = time.time()
            if next_at > now:
                time.sleep(next_at - now)
            next_at = max(next_at + self.interval, time.time() - 0.5)  # catch up, but not in a burst
            path = self.paths[i % len(self.paths)]
            i += 1
            try:
                if client is None:
                    client = Client(self.port)
                st, _, _ = client.get(path)
                if st == 200:
                    with self.lock:
                        self.ok += 1
                else:
                    self._fail("GET %s: status %d" % (path, st))
            except (OSError, EOFError, ValueError, IndexError) as e:
                self._fail("GET %s: %r" % (path, e))
                if client:
                    client.close()
                client = None
                time.sleep(0.01)
        if client:
            client.close()


class ReloadTest(unittest.TestCase):
    """Starts bulwark-testd backends by name and bulwark; everything is stopped at the end."""

    def backend(self, name):
        b = Testd(name=name)
        self.addCleanup(b.stop)
        return b

    def start(self, write_config=outside_link, **values):
        proxy = Bulwark(TEMPLATE, write_config=write_config, **dict(DEFAULTS, **values))
        self.addCleanup(proxy.stop)
        return proxy

    def assert_alive(self, proxy):
        self.assertIsNone(proxy.proc.poll(), "bulwark exited:\n" + stderr_tail(proxy, 20))


class ReloadBasics(ReloadTest):
    def test_counters_status_and_config_before_any_reload(self):
        a = self.backend("a")
        proxy = self.start(routes=routes(("all", "/", "a")), upstreams=upstreams(("a", a.address)))
        self.assertEqual(served_by(proxy.port, "/"), (200, "a"))
        config = effective_config(proxy)
        self.assertEqual(config["listeners"][0]["listen"], "127.0.0.1:%d" % proxy.port)
        self.assertEqual(counts(proxy), (0, 0),
                         "both %s series exist from the start with value 0" % RELOADS)
        reload = status(proxy).get("reload")
        self.assertIsNotNone(reload, "/status has a reload object")
        self.assertEqual((reload["generation"], reload["success"], reload["failure"]), (1, 0, 0), reload)


class ReloadUnderLoad(ReloadTest):
    RELOADS_N = 20

    def test_twenty_sighup_reloads_under_keepalive_load_and_an_open_tunnel(self):
        a, b = self.backend("a"), self.backend("b")
        # A: / -> a.  B: /b -> b (an upstream B adds and A removes), / -> a. Upstream a's block
        # is the same in both, so the tunnel through it carries over.
        A = dict(routes=routes(("all", "/", "a")), upstreams=upstreams(("a", a.address)))
        B = dict(routes=routes(("b", "/b", "b"), ("all", "/", "a")),
                 upstreams=upstreams(("a", a.address), ("b", b.address)))
        proxy = self.start(workers=2, **A)
        self.assertEqual(served_by(proxy.port, "/b/x"), (200, "a"), "config A: /b goes to a")
        tunnel = Tunnel(proxy.port)
        self.addCleanup(tunnel.close)
        self.assertEqual(tunnel.echo(b"before"), (2, b"before"))
        probe = Client(proxy.port)  # a keep-alive connection opened before every reload
        self.addCleanup(probe.close)
        self.assertEqual(probe.name("/b/probe"), (200, "a"))

        # ~640 req/s on 4 keep-alive connections, plus one connection whose requests take 150 ms
        # each, so that reloads happen while requests (to a, and to b that A removes) are in flight.
        fast = Load(proxy.port, ["/", "/b/x", "/a?size=2000", "/b/y?size=100"], threads=4, rate=640)
        slow = Load(proxy.port, ["/slow?delay=150", "/b/slow?delay=150"], threads=1, rate=50)
        for load in (fast, slow):
            self.addCleanup(load.stop)
            load.start()
        time.sleep(0.3)
        self.assertEqual((fast.failures, slow.failures), ([], []),
                         "the load before any reload: %s / %s" % (fast.summary(), slow.summary()))
        self.assertGreater(fast.ok, 0)
        for i in range(1, self.RELOADS_N + 1):
            signalled = time.time()
            config, expect = (B, "b") if i % 2 else (A, "a")
            sighup(proxy, proxy.render(TEMPLATE, **config))
            wait_counts(proxy, i, 0, what="SIGHUP reload %d of %d" % (i, self.RELOADS_N))
            # New requests on the keep-alive connection opened before any reload follow it.
            wait_for(lambda: probe.name("/b/probe") == (200, expect), timeout=2,
                     what="reload %d: /b/probe on the old keep-alive connection answered by %s" % (i, expect))
            self.assertEqual(tunnel.echo(b"reload %d" % i), (2, b"reload %d" % i),
                             "the tunnel echoes after reload %d" % i)
            time.sleep(max(0.0, 0.15 + 0.05 * (i % 3) - (time.time() - signalled)))
        time.sleep(0.3)
        fast.stop()
        slow.stop()

        self.assert_alive(proxy)
        self.assertTrue(not fast.failures and not slow.failures,
                        "every request answered 200 with no connection error: %s / slow: %s"
                        % (fast.summary(), slow.summary()))
        self.assertGreaterEqual(fast.rate(), 500, "the load ran at >= 500 req/s (%.0f)" % fast.rate())
        self.assertGreater(slow.ok, 10, "slow requests were in flight across the reloads")
        self.assertEqual(tunnel.echo(b"after" * 1000), (2, b"after" * 1000), "the tunnel still echoes")
        self.assertEqual(counts(proxy), (self.RELOADS_N, 0))
        reload = status(proxy)["reload"]
        self.assertEqual((reload["generation"], reload["success"], reload["failure"]),
                         (self.RELOADS_N + 1, self.RELOADS_N, 0), reload)
        # The last reload (20th) loaded A: /b goes to a again, upstream b is gone.
        self.assertEqual(served_by(proxy.port, "/b/x"), (200, "a"))
        self.assertEqual(probe.name("/b/x"), (200, "a"))
        config = effective_config(proxy)
        self.assertEqual([r["name"] for r in config["listeners"][0]["routes"]], ["all"])
        self.assertEqual([u["name"] for u in config["upstreams"]], ["a"])
        self.assertIn("config reloaded", proxy.stderr_text())
        sys.stderr.write("\nreload under load: %d reloads; fast: %s (%.0f req/s); slow: %s\n"
                         % (self.RELOADS_N, fast.summary(), fast.rate(), slow.summary()))

    def test_a_request_in_flight_finishes_when_its_upstream_is_removed(self):
        a, b = self.backend("a"), self.backend("b")
        proxy = self.start(routes=routes(("all", "/", "a")), upstreams=upstreams(("a", a.address)))
        slow = Client(proxy.port)
        self.addCleanup(slow.close)
        sent = time.time()
        slow.sock.sendall(b"GET /slow?delay=1500&size=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: proxy.metric("bulwark_inflight_requests", upstream="a") == 1,
                 what="the slow request in flight to a")
        idle = Client(proxy.port)
        self.addCleanup(idle.close)
        self.assertEqual(idle.name("/before"), (200, "a"))
        sighup(proxy, proxy.render(TEMPLATE, routes=routes(("all", "/", "b")), upstreams=upstreams(("b", b.address))))
        wait_counts(proxy, 1, 0)
        wait_served_by(proxy.port, "/new", "b")
        self.assertEqual(idle.name("/after"), (200, "b"), "a keep-alive connection opened before the reload")
        self.assertLess(time.time() - sent, 1.4, "(test validity) the reload happened while the request was in flight")
        st, h, body = slow.reader.read_response()
        self.assertEqual((st, h.get("x-testd-name"), len(body)), (200, "a", 5000),
                         "the request in flight finishes with the old upstream")
        self.assertEqual(slow.name("/next"), (200, "b"), "and its connection goes on with the new config")


class InvalidFileKeepsServing(ReloadTest):
    def test_yaml_and_schema_errors_are_rejected_then_a_fixed_file_loads(self):
        a, b = self.backend("a"), self.backend("b")
        ups = upstreams(("a", a.address), ("b", b.address))
        proxy = self.start(routes=routes(("all", "/", "a")), upstreams=ups)
        keep = Client(proxy.port)
        self.addCleanup(keep.close)
        self.assertEqual(keep.name("/v2"), (200, "a"))
        before = effective_config(proxy)
        fixed = proxy.render(TEMPLATE, routes=routes(("v2", "/v2", "b"), ("all", "/", "a")), upstreams=ups)
        broken = {
            "YAML error": fixed.replace("    routes:\n", "    routes: [\n", 1),
            "schema error": fixed.replace("upstream: b", "upstream: nope", 1).replace(
                "workers: 1", "workers: 1\nworkers_typo: 3", 1),
        }
        failed_lines = 0
        for n, (what, text) in enumerate(broken.items(), 1):
            sighup(proxy, text)
            wait_counts(proxy, 0, n, what="SIGHUP with a file with a " + what)
            self.assert_alive(proxy)
            self.assertEqual(served_by(proxy.port, "/v2"), (200, "a"), "%s: the old routes answer" % what)
            self.assertEqual(keep.name("/v2"), (200, "a"), "%s: the old keep-alive connection too" % what)
            self.assertEqual(effective_config(proxy), before, "%s: /config is unchanged" % what)
            logged = proxy.stderr_text().count("reload failed")
            self.assertGreater(logged, failed_lines, "%s: a 'reload failed' line is logged:\n%s"
                               % (what, stderr_tail(proxy, 10)))
            failed_lines = logged
            reload = status(proxy)["reload"]
            self.assertEqual((reload["generation"], reload["success"], reload["failure"]), (1, 0, n), reload)
            self.assertTrue(reload["last_error"], "%s: /status reload.last_error says why: %r" % (what, reload))
            self.assertEqual(proxy.metric("bulwark_config_last_reload_successful"), 0, what)
        self.assertNotIn("config reloaded", proxy.stderr_text())

        sighup(proxy, fixed)
        wait_counts(proxy, 1, 2, what="SIGHUP with the fixed file")
        self.assertEqual(served_by(proxy.port, "/v2"), (200, "b"))
        self.assertEqual(keep.name("/v2"), (200, "b"))
        self.assertEqual(served_by(proxy.port, "/other"), (200, "a"))
        reload = status(proxy)["reload"]
        self.assertEqual((reload["generation"], reload["success"], reload["failure"]), (2, 1, 2), reload)
        self.assertEqual(proxy.metric("bulwark_config_last_reload_successful"), 1)
        self.assertIn("config reloaded", proxy.stderr_text())
        self.assertEqual([r["name"] for r in effective_config(proxy)["listeners"][0]["routes"]], ["v2", "all"])


class WatchedDirectory(ReloadTest):
    """No signal in these tests: the directory holding the config file is watched."""

    def config(self, proxy, a, b, *extra_routes):
        return proxy.render(TEMPLATE, routes=routes(*extra_routes, ("all", "/", "a")),
                            upstreams=upstreams(("a", a.address), ("b", b.address)))

    def assert_no_reload_for(self, proxy, expected, what, wait=0.8):
        time.sleep(wait)  # past the debounce, with room for a slow machine
        self.assertEqual(counts(proxy), expected, "no reload after %s (same bytes)" % what)

    def test_configmap_swap_of_data_is_loaded(self):
        a, b = self.backend("a"), self.backend("b")
        proxy = self.start(write_config=configmap, routes=routes(("all", "/", "a")),
                           upstreams=upstreams(("a", a.address), ("b", b.address)))
        self.assertEqual(served_by(proxy.port, "/new"), (200, "a"))
        keep = Client(proxy.port)
        self.addCleanup(keep.close)
        self.assertEqual(keep.name("/new"), (200, "a"))

        configmap_swap(proxy.config_path, self.config(proxy, a, b, ("new", "/new", "b")),
                       "..2026_01_01_00_01_00.000000002")
        wait_served_by(proxy.port, "/new", "b", what="the ConfigMap swap loaded (/new answered by b)")
        wait_counts(proxy, 1, 0)
        self.assertEqual(keep.name("/new"), (200, "b"))
        self.assertIn("config reloaded", proxy.stderr_text())
        self.assert_no_reload_for(proxy, (1, 0), "the swap settled (its old directory removed)")

        # The same bytes in a new ..timestamp directory: nothing to load.
        configmap_swap(proxy.config_path, self.config(proxy, a, b, ("new", "/new", "b")),
                       "..2026_01_01_00_02_00.000000003")
        self.assert_no_reload_for(proxy, (1, 0), "a swap to identical contents")

        # An invalid file arriving by a swap is rejected like one given by SIGHUP.
        configmap_swap(proxy.config_path, "listeners: [\n", "..2026_01_01_00_03_00.000000004")
        wait_counts(proxy, 1, 1, what="the swap to an invalid file")
        self.assertEqual(served_by(proxy.port, "/new"), (200, "b"), "the old config keeps serving")
        self.assertIn("reload failed", proxy.stderr_text())

        configmap_swap(proxy.config_path, self.config(proxy, a, b, ("new2", "/new2", "b")),
                       "..2026_01_01_00_04_00.000000005")
        wait_served_by(proxy.port, "/new2", "b")
        wait_counts(proxy, 2, 1)
        self.assertEqual(served_by(proxy.port, "/new"), (200, "a"), "the route /new is gone")
        self.assert_alive(proxy)

    def test_regular_file_rewritten_in_place_or_renamed_over_is_loaded(self):
        a, b = self.backend("a"), self.backend("b")
        proxy = self.start(write_config=plain_file, routes=routes(("all", "/", "a")),
                           upstreams=upstreams(("a", a.address), ("b", b.address)))
        self.assertEqual(served_by(proxy.port, "/new"), (200, "a"))
        etc = os.path.dirname(proxy.config_path)

        write(proxy.config_path, self.config(proxy, a, b, ("new", "/new", "b")))  # in place
        wait_served_by(proxy.port, "/new", "b", what="the rewritten file loaded (/new answered by b)")
        wait_counts(proxy, 1, 0)

        write(os.path.join(etc, "notes.txt"), "another file in the directory\n")
        os.utime(proxy.config_path)  # touched, same bytes
        self.assert_no_reload_for(proxy, (1, 0), "another file changed and the config was touched")

        tmp = os.path.join(etc, ".bulwark.yaml.tmp")  # what editors and config tools do
        write(tmp, self.config(proxy, a, b, ("new2", "/new2", "b")))
        os.replace(tmp, proxy.config_path)
        wait_served_by(proxy.port, "/new2", "b", what="the renamed-over file loaded (/new2 answered by b)")
        wait_counts(proxy, 2, 0)
        self.assertEqual(served_by(proxy.port, "/new"), (200, "a"))

        # Edited, then SIGHUP at once (what an operator does): loaded once, not again by the
        # watcher when its debounce ends (the bytes are those last loaded).
        write(proxy.config_path, self.config(proxy, a, b, ("new3", "/new3", "b")))
        proxy.signal(signal.SIGHUP)
        wait_served_by(proxy.port, "/new3", "b")
        wait_counts(proxy, 3, 0)
        self.assert_no_reload_for(proxy, (3, 0), "an edit followed by SIGHUP")
        self.assert_alive(proxy)


class BreakerSurvivesReload(ReloadTest):
    BREAKER = "circuit_breaker: { consecutive_failures: 2, open_for: 30s, max_open_for: 30s }"
    BREAKER_CHANGED = "circuit_breaker: { consecutive_failures: 3, open_for: 30s, max_open_for: 30s }"

    def test_an_open_breaker_stays_open_until_its_upstream_block_changes(self):
        bad, good = self.backend("bad"), self.backend("good")
        request(bad.port, "GET", "/__mode?status=500")
        app = ("app", bad.address, self.BREAKER)
        all_route = ("all", "/", "app", "timeout: 2s")
        proxy = self.start(routes=routes(all_route), upstreams=upstreams(app))
        for _ in range(10):
            request(proxy.port, "GET", "/trip")
            if breaker_state(proxy, "app") == "open":
                break
        self.assertEqual(breaker_state(proxy, "app"), "open", "the breaker tripped")

        def assert_fails_fast(what):
            seen = bad.stats()["requests"]
            st, h, _ = request(proxy.port, "GET", "/x")
            self.assertEqual((st, h.get("x-bulwark-reason")), (503, "circuit-open"), what)
            self.assertEqual(bad.stats()["requests"], seen + 1, what + ": the upstream saw nothing")
        assert_fails_fast("before any reload")

        # Reload 1: a route and an upstream added; app's block is the same.
        sighup(proxy, proxy.render(TEMPLATE, routes=routes(("other", "/other", "other"), all_route),
                                   upstreams=upstreams(app, ("other", good.address))))
        wait_counts(proxy, 1, 0)
        self.assertEqual(served_by(proxy.port, "/other"), (200, "good"), "the new route answers")
        self.assertEqual(breaker_state(proxy, "app"), "open", "the unchanged upstream keeps its open breaker")
        self.assertEqual(proxy.metric("bulwark_circuit_state", upstream="app", state="open"), 1)
        assert_fails_fast("after a reload that left app unchanged")

        # Reload 2: app's block changed: fresh state, the breaker is closed and the next request
        # reaches the (still failing) upstream.
        sighup(proxy, proxy.render(TEMPLATE, routes=routes(("other", "/other", "other"), all_route),
                                   upstreams=upstreams(("app", bad.address, self.BREAKER_CHANGED),
                                                       ("other", good.address))))
        wait_counts(proxy, 2, 0)
        self.assertEqual(breaker_state(proxy, "app"), "closed", "a changed upstream block starts afresh")
        seen = bad.stats()["requests"]
        st, h, _ = request(proxy.port, "GET", "/x")
        self.assertEqual((st, h.get("x-bulwark-reason")), (500, None), "the request reached the upstream")
        self.assertEqual(bad.stats()["requests"], seen + 2)
        self.assertEqual(served_by(proxy.port, "/other"), (200, "good"))


class ListenersAddedRemoved(ReloadTest):
    def test_a_listener_added_then_removed(self):
        a, b = self.backend("a"), self.backend("b")
        ups = upstreams(("a", a.address), ("b", b.address))
        base = dict(routes=routes(("all", "/", "a")), upstreams=ups)
        proxy = self.start(**base)
        keep = Client(proxy.port)
        self.addCleanup(keep.close)
        self.assertEqual(keep.name("/"), (200, "a"))
        port2 = free_port()
        with self.assertRaises(ConnectionRefusedError):
            connect(port2, timeout=1)

        sighup(proxy, proxy.render(TEMPLATE, listeners=listener("second", port2, "b"), **base))
        wait_counts(proxy, 1, 0, what="the reload adding a listener")
        wait_served_by(port2, "/", "b", what="the new listener on %d answering (by b)" % port2)
        self.assertEqual([l["name"] for l in effective_config(proxy)["listeners"]], ["inbound", "second"])
        self.assertEqual(keep.name("/"), (200, "a"), "the first listener's keep-alive connection")
        self.assertEqual(served_by(proxy.port, "/"), (200, "a"))

        sighup(proxy, proxy.render(TEMPLATE, **base))
        wait_counts(proxy, 2, 0, what="the reload removing the listener")

        def refused():
            try:
                connect(port2, timeout=1).close()
                return False
            except ConnectionRefusedError:
                return True
        wait_for(refused, timeout=RELOAD_TIMEOUT, what="connections to the removed listener refused")
        self.assertEqual([l["name"] for l in effective_config(proxy)["listeners"]], ["inbound"])
        self.assertEqual(keep.name("/"), (200, "a"), "the first listener's keep-alive connection")
        self.assertEqual(served_by(proxy.port, "/"), (200, "a"))
        self.assert_alive(proxy)


class RestartRequiredRejected(ReloadTest):
    def test_workers_admin_access_log_and_redis_changes_are_rejected(self):
        a, b = self.backend("a"), self.backend("b")
        ups = upstreams(("a", a.address), ("b", b.address))
        proxy = self.start(routes=routes(("all", "/", "a")), upstreams=ups)
        keep = Client(proxy.port)
        self.addCleanup(keep.close)
        self.assertEqual(keep.name("/new"), (200, "a"))
        before = effective_config(proxy)
        new_routes = routes(("new", "/new", "b"), ("all", "/", "a"))
        admin2 = free_port()
        changes = [
            ("workers", dict(workers=2)),
            ("admin", dict(admin=admin2)),
            ("access_log", dict(access_log='"%s"' % proxy.log_path)),
            ("redis", dict(top="redis: { address: 127.0.0.1:%d }" % free_port())),
        ]
        for key, change in changes:
            with self.subTest(key):
                success, failure = counts_or_zero(proxy)
                logged = proxy.stderr_text().count("reload failed")
                # The same file also adds a route: none of it may be applied.
                sighup(proxy, proxy.render(TEMPLATE, routes=new_routes, upstreams=ups, **change))
                wait_counts(proxy, success, failure + 1, what="SIGHUP changing " + key)
                self.assert_alive(proxy)
                self.assertEqual(served_by(proxy.port, "/new"), (200, "a"), "the old config still serves")
                self.assertEqual(keep.name("/new"), (200, "a"))
                self.assertEqual(effective_config(proxy), before, "/config unchanged")
                self.assertTrue(status(proxy)["reload"]["last_error"])
                self.assertGreater(proxy.stderr_text().count("reload failed"), logged, "'reload failed' logged")
        with self.assertRaises(ConnectionRefusedError):
            connect(admin2, timeout=1)
        self.assertFalse(os.path.exists(proxy.log_path), "the access log was not opened")

        # The route alone (the same file without the restart-only changes) loads.
        success, failure = counts_or_zero(proxy)
        sighup(proxy, proxy.render(TEMPLATE, routes=new_routes, upstreams=ups))
        wait_counts(proxy, success + 1, failure, what="SIGHUP with only the route added")
        self.assertEqual(served_by(proxy.port, "/new"), (200, "b"))
        self.assertEqual(keep.name("/new"), (200, "b"))


if __name__ == "__main__":
    unittest.main()
