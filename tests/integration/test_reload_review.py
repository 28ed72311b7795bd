"""Hot config reload under review (an attacker's and an SRE's view): many reloads must not
grow memory or descriptors and must close the pooled connections of replaced upstreams;
SIGHUP storms under load lose no request; requests waiting in a bulkhead or load-shedding
queue, or between retries, when their upstream changes finish on the old one; a removed
listener lets its tunnel and upload finish and then frees its socket; swapped, renamed and
moved listeners keep bulwark_downstream_connections right; removed routes' series go, kept
counters and rate-limit buckets stay; unusable files are refused; SIGHUP during a drain is
ignored.

The class ReloadEdgeCases holds checks that failed at the commit reviewed (fdc01d9), each for a
defect found by the review: SIGHUP in the first moments of the process kills it; a FIFO at
the config path freezes the main loop (admin endpoints, SIGTERM); a 1 MiB file freezes it for
seconds and leaves ~160 MB in the process; a file truncated and then written is acted on while
empty (a failed reload counted); a change written while Bulwark starts is never applied;
replacing the config directory silently ends the watch.

SIGHUP tests use test_reload.py's layout (`-c RUN/etc/bulwark.yaml` a symlink to a file in a
directory of its own), so that only SIGHUP loads a change and reload counts are exact."""
import errno
import json
import os
import shutil
import signal
import socket
import threading
import time
import unittest

from harness import SANITIZED, Bulwark, Reader, connect, free_port, request, wait_for
from test_reload import (DEFAULTS, RELOAD_TIMEOUT, TEMPLATE, Client, Load, ReloadTest, Tunnel,
                         counts, effective_config, listener, outside_link, plain_file, routes,
                         served_by, sighup, status, stderr_tail, upstreams, wait_counts,
                         wait_served_by, write)


def write_atomic(path, text):
    """What config tools do: a temporary file renamed over the config (never seen half written)."""
    tmp = path + ".tmp"
    write(tmp, text)
    os.replace(tmp, path)


def descriptors(proxy):
    return len(os.listdir("/proc/%d/fd" % proxy.proc.pid))


def socket_inodes_on_port(proxy, port):
    """Inodes of bulwark's own TCP sockets whose local port is `port` (listening or connected)."""
    mine = set()
    for fd in os.listdir("/proc/%d/fd" % proxy.proc.pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (proxy.proc.pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[9] in mine:
                found.append(fields[9])
    return found


def gauges(proxy, name="bulwark_downstream_connections"):
    """{listener: value} of a per-listener gauge."""
    out = {}
    for line in proxy.metrics().splitlines():
        if line.startswith(name + "{"):
            out[line.split('listener="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
    return out


def reload_number(proxy):
    return status(proxy)["reload"]


def wait_success(proxy, n, timeout=RELOAD_TIMEOUT):
    wait_for(lambda: reload_number(proxy)["success"] >= n, timeout=timeout, interval=0.002,
             what="successful reload %d (stderr ends: %s)" % (n, stderr_tail(proxy)))


class Call(threading.Thread):
    """One GET on its own connection, in the background: result is (status, x-testd-name,
    x-bulwark-reason, seconds) or ("error", repr, None, seconds)."""

    def __init__(self, port, path, timeout=15):
        super().__init__(daemon=True)
        self.port, self.path, self.timeout, self.result = port, path, timeout, None
        self.start()

    def run(self):
        started = time.time()
        try:
            st, h, _ = request(self.port, "GET", self.path, timeout=self.timeout)
            self.result = (st, h.get("x-testd-name"), h.get("x-bulwark-reason"), time.time() - started)
        except (OSError, EOFError) as e:
            self.result = ("error", repr(e), None, time.time() - started)


class CleanExit(ReloadTest):
    """Bulwark must also exit 0 at the end (under the sanitizers: no error report at exit)."""

    def start(self, **values):
        proxy = super().start(**values)

        def stopped_cleanly():
            code = proxy.stop()
            self.assertIn(code, (0, None), "bulwark exited with %s:\n%s" % (code, stderr_tail(proxy, 30)))
        self.addCleanup(stopped_cleanly)
        return proxy


class ManyReloads(CleanExit):
    def test_300_reloads_changing_an_upstream_under_load_level_off_and_free_old_pools(self):
        a, b = self.backend("a"), self.backend("b")
        # The same upstream name, its endpoint changed: every reload makes a new upstream state
        # and new pools, and the old ones must go once their last request has ended.
        A = dict(routes=routes(("all", "/", "app")), upstreams=upstreams(("app", a.address)))
        B = dict(routes=routes(("all", "/", "app")), upstreams=upstreams(("app", b.address)))
        proxy = self.start(workers=2, **A)
        load = Load(proxy.port, ["/", "/x?size=3000"], threads=3, rate=300)
        self.addCleanup(load.stop)
        load.start()
        texts = [proxy.render(TEMPLATE, **A), proxy.render(TEMPLATE, **B)]

        def reload(i):
            sighup(proxy, texts[i % 2])  # odd: B, even: A
            wait_success(proxy, i)
        for i in range(1, 31):  # warm-up: arenas, buffers, pools
            reload(i)
        base_fds, base_rss = descriptors(proxy), proxy.rss_kib()
        for i in range(31, 301):
            reload(i)
        time.sleep(0.3)
        load.stop()
        self.assert_alive(proxy)
        self.assertEqual(load.failures, [], "every request answered 200: " + load.summary())
        self.assertGreater(load.ok, 100, "requests ran across the reloads: " + load.summary())
        self.assertEqual(counts(proxy), (300, 0))
        self.assertEqual(reload_number(proxy)["generation"], 301)
        # The last reload went back to a: b's pooled connections belong to generations that
        # have ended and must be closed (the one open connection is this /__stats request).
        wait_for(lambda: b.stats()["connections_open"] == 1, timeout=3,
                 what="the replaced upstream's pooled connections to b closed (b: %r)" % b.stats())
        wait_for(lambda: descriptors(proxy) <= base_fds + 2, timeout=3,
                 what="descriptors back to %d after 270 more reloads (now %d)" % (base_fds, descriptors(proxy)))
        if not SANITIZED:
            grown = proxy.rss_kib() - base_rss
            self.assertLess(grown, 2048, "RSS grew %d KiB over 270 reloads (a generation leak is about "
                            "12 KiB each)" % grown)
        pools = [e["pool"] for u in status(proxy)["upstreams"] for e in u["endpoints"]]
        self.assertEqual(len(pools), 1, "one upstream, one endpoint in /status: %r" % pools)

    def test_a_storm_of_back_to_back_sighups_under_load_loses_nothing(self):
        a, b = self.backend("a"), self.backend("b")
        bulkhead = "limits: { max_requests: 2, max_pending: 100, pending_timeout: 5s }"
        A = dict(routes=routes(("all", "/", "app")), upstreams=upstreams(("app", a.address)))
        B = dict(routes=routes(("b", "/b", "bb", "timeout: 10s"), ("all", "/", "app")),
                 upstreams=upstreams(("app", b.address), ("bb", b.address, bulkhead)))
        proxy = self.start(workers=2, **A)
        keepalive = Load(proxy.port, ["/", "/b/x?size=3000", "/s?delay=30", "/b/s?delay=20"],
                         threads=4, rate=300)
        self.addCleanup(keepalive.stop)
        keepalive.start()
        fresh = {"ok": 0, "failures": []}  # requests on new connections: the listening socket is kept
        stop = threading.Event()

        def new_connections():
            while not stop.is_set():
                try:
                    st, _, _ = request(proxy.port, "GET", "/n", timeout=5)
                    if st == 200:
                        fresh["ok"] += 1
                    else:
                        fresh["failures"].append(st)
                except (OSError, EOFError) as e:
                    fresh["failures"].append(repr(e))
        thread = threading.Thread(target=new_connections, daemon=True)
        thread.start()
        self.addCleanup(stop.set)
        time.sleep(0.2)
        real = os.path.realpath(proxy.config_path)
        texts = [proxy.render(TEMPLATE, **A), proxy.render(TEMPLATE, **B)]
        sent = 200
        for i in range(sent):  # no pause: signals pile up (the kernel merges some of them)
            write_atomic(real, texts[(i + 1) % 2])
            proxy.signal(signal.SIGHUP)
        time.sleep(1.0)
        stop.set()
        thread.join(10)
        keepalive.stop()
        self.assert_alive(proxy)
        self.assertEqual(keepalive.failures, [], "keep-alive load: " + keepalive.summary())
        self.assertEqual(fresh["failures"], [], "requests on new connections: %d ok" % fresh["ok"])
        self.assertGreater(fresh["ok"], 10)
        reload = reload_number(proxy)
        self.assertEqual(reload["failure"], 0, reload)
        self.assertTrue(1 <= reload["success"] <= sent, reload)
        self.assertEqual(reload["generation"], reload["success"] + 1, reload)
        self.assertEqual(counts(proxy), (reload["success"], 0))
        self.assertEqual(proxy.stderr_text().count("config reloaded"), reload["success"],
                         "one 'config reloaded' line per counted reload")
        # The last file written (i = 199) was A.
        self.assertEqual([r["name"] for r in effective_config(proxy)["listeners"][0]["routes"]], ["all"])
        self.assertEqual(served_by(proxy.port, "/b/x"), (200, "a"))
        wait_for(lambda: gauges(proxy).get("inbound") == 0, timeout=3,
                 what="bulwark_downstream_connections back to 0 (%r)" % gauges(proxy))


class InFlightAcrossReload(CleanExit):
    """Requests that wait (bulkhead queue, load-shedding queue, retry back-off) when their
    upstream is replaced finish on the old one; new requests use the new one at once."""

    def queued_then_replaced(self, extra, delay_ms=400, n=4):
        a, b = self.backend("a"), self.backend("b")
        A = dict(routes=routes(("all", "/", "app", "timeout: 8s")), upstreams=upstreams(("app", a.address, extra)))
        B = dict(routes=routes(("all", "/", "app", "timeout: 8s")), upstreams=upstreams(("app", b.address, extra)))
        proxy = self.start(**A)
        calls = [Call(proxy.port, "/q%d?delay=%d" % (i, delay_ms)) for i in range(n)]
        wait_for(lambda: proxy.metric("bulwark_inflight_requests", upstream="app") == 1,
                 what="the first request in flight")
        time.sleep(0.1)  # the others wait in the queue
        sighup(proxy, proxy.render(TEMPLATE, **B))
        wait_counts(proxy, 1, 0)
        time.sleep(0.1)  # the worker takes the new generation (a notification away)
        started = time.time()
        self.assertEqual(served_by(proxy.port, "/new"), (200, "b"))
        self.assertLess(time.time() - started, 2 * delay_ms / 1000.0,
                        "a new request does not queue behind the old upstream's %d" % (n - 1))
        self.assertTrue(any(c.is_alive() for c in calls), "(test validity) requests still queued")
        for c in calls:
            c.join(12)
        results = [c.result for c in calls]
        self.assertEqual([r[:3] for r in results], [(200, "a", None)] * n,
                         "every queued request answered by the old upstream: %r" % (results,))
        # The old upstream's pool closes when its last request has ended.
        wait_for(lambda: a.stats()["connections_open"] == 1, timeout=3,
                 what="the old upstream's pooled connections to a closed (%r)" % a.stats())
        self.assertEqual(proxy.metric("bulwark_pending_requests"), 0)
        self.assertEqual(proxy.metric("bulwark_inflight_requests"), 0)
        self.assert_alive(proxy)

    def test_requests_in_the_bulkhead_queue_finish_on_the_replaced_upstream(self):
        self.queued_then_replaced("limits: { max_requests: 1, max_pending: 10, pending_timeout: 5s }")

    def test_requests_in_the_load_shedding_queue_finish_on_the_replaced_upstream(self):
        self.queued_then_replaced("load_shedding: { algorithm: fixed, initial_limit: 1, min_limit: 1, "
                                  "max_limit: 1, queue: { size: 10, timeout: 5s } }")

    def test_requests_between_retries_finish_when_their_upstream_is_removed(self):
        a, b = self.backend("a"), self.backend("b")
        request(a.port, "GET", "/__mode?status=503")
        # 4 attempts, each back-off uniform in [0, 400 ms] (full jitter): ~600 ms per request.
        retry = ("timeout: 5s, retry: { attempts: 4, on: [503], backoff: { base: 400ms, max: 400ms }, "
                 "budget: { ratio: 100%, min_per_second: 100 } }")
        proxy = self.start(routes=routes(("all", "/", "app", retry)), upstreams=upstreams(("app", a.address)))
        calls = [Call(proxy.port, "/r%d" % i) for i in range(4)]
        time.sleep(0.1)
        # Removed upstream, route now to another one: the retries go on with the old upstream.
        sighup(proxy, proxy.render(TEMPLATE, routes=routes(("all", "/", "other", retry)),
                                   upstreams=upstreams(("other", b.address))))
        wait_counts(proxy, 1, 0)
        self.assertTrue(any(c.is_alive() for c in calls), "(test validity) requests still retrying")
        wait_served_by(proxy.port, "/new", "b")
        for c in calls:
            c.join(10)
        results = [c.result for c in calls]
        self.assertEqual([r[:2] for r in results], [(503, "a")] * 4, results)
        self.assertTrue(all(r[3] < 4.0 for r in results), "no request hung: %r" % (results,))
        self.assertEqual(proxy.metric_eventually(12, "bulwark_retries_total", route="all", reason="503"), 12,
                         "3 retries each, all to the old upstream")
        wait_for(lambda: a.stats()["connections_open"] == 1, timeout=3,
                 what="the removed upstream's pooled connections to a closed (%r)" % a.stats())


class ListenersAcrossReload(CleanExit):
    def test_a_removed_listener_lets_its_tunnel_and_upload_finish_then_frees_its_socket(self):
        a, b = self.backend("a"), self.backend("b")
        base = dict(routes=routes(("all", "/", "a")), upstreams=upstreams(("a", a.address), ("b", b.address)))
        port2 = free_port()
        proxy = self.start(listeners=listener("second", port2, "b"), **base)
        tunnel = Tunnel(port2)
        self.addCleanup(tunnel.close)
        self.assertEqual(tunnel.echo(b"before"), (2, b"before"))
        upload = connect(port2)
        self.addCleanup(upload.close)
        upload.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"u" * 1000)
        idle = Client(port2)
        self.addCleanup(idle.close)
        self.assertEqual(idle.name("/"), (200, "b"))
        wait_for(lambda: gauges(proxy).get("second") == 3, what="3 connections on 'second' (%r)" % gauges(proxy))

        sighup(proxy, proxy.render(TEMPLATE, listeners="", **base))
        wait_counts(proxy, 1, 0)

        def refused():
            try:
                connect(port2, timeout=1).close()
                return False
            except ConnectionRefusedError:
                return True
        wait_for(refused, what="new connections to the removed listener refused")
        self.assertEqual(tunnel.echo(b"after"), (2, b"after"), "the tunnel stays open")
        for _ in range(9):
            upload.sendall(b"u" * 11000)
            time.sleep(0.02)
        upload.sendall(b"u" * 1000)
        st, h, _ = Reader(upload).read_response()
        self.assertEqual((st, h.get("x-testd-name"), h.get("x-testd-body-bytes")), (200, "b", "100000"),
                         "the upload in progress finishes")
        self.assertEqual(h.get("connection"), "close", "and its connection closes after it")
        upload.close()
        with self.assertRaises((EOFError, OSError), msg="the idle keep-alive connection is closed"):
            idle.get("/")
        idle.close()
        self.assertNotIn("second", gauges(proxy), "the removed listener's series are gone")
        self.assertEqual(tunnel.echo(b"x" * 5000), (2, b"x" * 5000))
        self.assertTrue(socket_inodes_on_port(proxy, port2), "the tunnel still holds a socket on the port")
        tunnel.close()
        wait_for(lambda: not socket_inodes_on_port(proxy, port2), timeout=3,
                 what="no socket of bulwark left on the removed listener's port")
        self.assertEqual(served_by(proxy.port, "/"), (200, "a"))
        self.assert_alive(proxy)

    def test_swapped_renamed_and_moved_listeners_keep_the_connection_gauge_right(self):
        a, b = self.backend("a"), self.backend("b")
        x, y, z = free_port(), free_port(), free_port()
        ups = upstreams(("a", a.address), ("b", b.address))
        tpl = TEMPLATE.replace("  - name: inbound\n    listen: 127.0.0.1:{port}\n    routes:\n{routes}\n", "")

        def config(first, second):
            return dict(listeners=listener(*first) + "\n" + listener(*second), upstreams=ups, routes="")
        proxy = Bulwark(tpl, write_config=outside_link, **dict(DEFAULTS, **config(("one", x, "a"), ("two", y, "b"))))
        self.addCleanup(lambda: self.assertIn(proxy.stop(), (0, None), stderr_tail(proxy, 30)))

        def reload(n, first, second):
            sighup(proxy, proxy.render(tpl, **config(first, second)))
            wait_counts(proxy, n, 0)
        on_x = [Client(x) for _ in range(3)]
        on_y = [Client(y)]
        for c in on_x + on_y:
            self.addCleanup(c.close)
        self.assertEqual([c.name("/") for c in on_x + on_y], [(200, "a")] * 3 + [(200, "b")])
        wait_for(lambda: gauges(proxy) == {"one": 3, "two": 1}, what="gauges at start (%r)" % gauges(proxy))

        reload(1, ("one", y, "a"), ("two", x, "b"))  # addresses swapped: sockets kept by address
        wait_for(lambda: gauges(proxy) == {"one": 1, "two": 3}, what="gauges after the swap (%r)" % gauges(proxy))
        wait_served_by(x, "/", "b")
        self.assertEqual(served_by(y, "/"), (200, "a"))
        self.assertEqual(on_x[0].name("/"), (200, "b"), "an open connection on x follows x's new listener")

        reload(2, ("uno", y, "a"), ("two", x, "b"))  # renamed, same address
        wait_for(lambda: gauges(proxy) == {"uno": 1, "two": 3}, what="gauges after the rename (%r)" % gauges(proxy))
        self.assertEqual(on_y[0].name("/"), (200, "a"))

        reload(3, ("uno", y, "a"), ("two", z, "b"))  # moved: x's idle connections close
        wait_for(lambda: gauges(proxy) == {"uno": 1, "two": 0}, what="x's connections closed (%r)" % gauges(proxy))
        wait_served_by(z, "/", "b")
        with self.assertRaises(ConnectionRefusedError):
            connect(x, timeout=1)
        for c in on_y:
            c.close()
        wait_for(lambda: gauges(proxy) == {"uno": 0, "two": 0}, what="all gauges back to 0 (%r)" % gauges(proxy))
        self.assertFalse(socket_inodes_on_port(proxy, x))


class MetricsAcrossReload(CleanExit):
    def test_removed_route_series_go_kept_counters_and_buckets_stay(self):
        a, b = self.backend("a"), self.backend("b")
        ups = upstreams(("a", a.address), ("b", b.address))
        limited = ("limited", "/limited", "a", "rate_limit: { rate: 1/m, burst: 2, key: route }")
        gone = ("gone", "/gone", "b", "retry: { attempts: 2 }")
        proxy = self.start(routes=routes(limited, gone, ("all", "/", "a")), upstreams=ups)
        for _ in range(3):
            self.assertEqual(served_by(proxy.port, "/gone"), (200, "b"))
            self.assertEqual(served_by(proxy.port, "/x"), (200, "a"))
        self.assertEqual([request(proxy.port, "GET", "/limited")[0] for _ in range(3)], [200, 200, 429])
        self.assertIn('route="gone"', proxy.metrics())

        sighup(proxy, proxy.render(TEMPLATE, routes=routes(limited, ("new", "/new", "b"), ("all", "/", "a")), upstreams=ups))
        wait_counts(proxy, 1, 0)
        text = proxy.metrics()
        self.assertNotIn('route="gone"', text, "every series of the removed route is gone")
        self.assertEqual(proxy.metric("bulwark_requests_total", listener="inbound", route="all"), 3,
                         "the kept route's counter is not reset")
        self.assertEqual(request(proxy.port, "GET", "/limited")[0], 429, "the unchanged route keeps its bucket")
        self.assertEqual(proxy.metric("bulwark_ratelimit_decisions_total", route="limited", decision="limited"), 2)
        wait_served_by(proxy.port, "/new", "b")
        self.assertEqual(served_by(proxy.port, "/x"), (200, "a"))
        self.assertEqual(proxy.metric_eventually(4, "bulwark_requests_total", listener="inbound", route="all"), 4)


class UnusableFiles(CleanExit):
    def test_missing_directory_oversized_looping_and_device_files_are_refused(self):
        a = self.backend("a")
        proxy = self.start(routes=routes(("all", "/", "a")), upstreams=upstreams(("a", a.address)))
        real = os.path.realpath(proxy.config_path)
        before = effective_config(proxy)
        cases = []

        def case(what, expect, prepare, undo):
            prepare()
            proxy.signal(signal.SIGHUP)
            n = len(cases) + 1
            wait_counts(proxy, 0, n, what=what)
            cases.append(what)
            self.assertIn(expect, reload_number(proxy)["last_error"], what)
            self.assertEqual(served_by(proxy.port, "/"), (200, "a"), what + ": the old config serves")
            self.assertEqual(effective_config(proxy), before, what)
            undo()
        os.remove(real)
        case("deleted", "ENOENT", lambda: None, lambda: None)
        case("a directory", "EISDIR", lambda: os.mkdir(real), lambda: os.rmdir(real))
        case("5 MiB", "larger than 4 MiB", lambda: write(real, "#" * (5 << 20)), lambda: os.remove(real))
        case("a symlink loop", "ELOOP", lambda: os.symlink(real, real), lambda: os.remove(real))
        case("/dev/zero", "not a regular file", lambda: os.symlink("/dev/zero", real), lambda: os.remove(real))
        self.assert_alive(proxy)

    def test_sighup_during_the_drain_delay_is_ignored(self):
        a, b = self.backend("a"), self.backend("b")
        ups = upstreams(("a", a.address), ("b", b.address))
        drain = "drain: { delay: 1500ms, timeout: 5s }"
        proxy = self.start(top=drain, routes=routes(("all", "/", "a")), upstreams=ups)
        proxy.signal(signal.SIGTERM)
        wait_for(lambda: request(proxy.admin_port, "GET", "/ready")[0] == 503, what="/ready 503")
        sighup(proxy, proxy.render(TEMPLATE, top=drain, routes=routes(("all", "/", "b")), upstreams=ups))
        wait_for(lambda: "ignored: draining" in proxy.stderr_text(), what="the reload logged as ignored")
        self.assertEqual(served_by(proxy.port, "/"), (200, "a"), "still the old config during the delay")
        self.assertEqual(reload_number(proxy)["generation"], 1)
        self.assertEqual(proxy.wait(10), 0)


class ReloadEdgeCases(ReloadTest):
    """Each of these failed at fdc01d9 (a defect the review found) and passes since the fixes."""

    def test_sighup_in_the_first_moments_of_the_process_does_not_kill_it(self):
        # Before Server::run installs its SIGHUP handler (after the config is loaded and the
        # listeners bound), SIGHUP has its default action: the process dies. systemd's
        # ExecReload, a config tool or the watcher's own writer can send one at any time.
        a = self.backend("a")
        many = routes(*[("r%d" % i, "/r%d" % i, "a") for i in range(1500)] + [("all", "/", "a")])
        proxy = Bulwark(TEMPLATE, wait_ready=False, write_config=outside_link,
                        **dict(DEFAULTS, routes=many, upstreams=upstreams(("a", a.address))))
        self.addCleanup(proxy.stop)
        # Popen has returned: bulwark has been exec'd. Before main() runs (the dynamic loader,
        # longer on a busy machine) no program can catch a signal; from its first line on,
        # SIGHUP is ignored until the reload handler takes over. Wait for that, then signal
        # while the config is still being loaded and the listeners bound.
        self.assertTrue(os.readlink("/proc/%d/exe" % proxy.proc.pid).endswith("bulwark"))

        def hup_ignored_or_caught():
            with open("/proc/%d/status" % proxy.proc.pid) as f:
                for line in f:
                    if line.startswith(("SigIgn:", "SigCgt:")) and \
                            int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)):
                        return True
            return False
        wait_for(hup_ignored_or_caught, timeout=10, interval=0.0005, what="main() ignoring SIGHUP")
        proxy.signal(signal.SIGHUP)
        time.sleep(0.3)
        self.assertIsNone(proxy.proc.poll(), "bulwark was killed by a SIGHUP sent while it started "
                          "(exit status %r)" % proxy.proc.poll())
        proxy.wait_ready()
        self.assertEqual(served_by(proxy.port, "/"), (200, "a"))

    def test_a_fifo_at_the_config_path_does_not_freeze_the_admin_endpoints_or_sigterm(self):
        # load_config_file opens the path with a blocking open(2): a FIFO blocks the main loop
        # until some process writes to it (admin, signals, DNS, health checks all stop).
        a = self.backend("a")
        proxy = self.start(routes=routes(("all", "/", "a")), upstreams=upstreams(("a", a.address)))
        real = os.path.realpath(proxy.config_path)
        os.remove(real)
        os.mkfifo(real)

        def unblock():  # a writer that closes at once: the blocked open returns, the read sees EOF
            try:
                os.close(os.open(real, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
        self.addCleanup(unblock)  # runs before proxy.stop (cleanups run last-in first-out)
        proxy.signal(signal.SIGHUP)
        time.sleep(0.3)
        try:
            ready = request(proxy.admin_port, "GET", "/ready", timeout=2)[0]
        except socket.timeout:
            ready = "no answer within 2 s"
        self.assertEqual(ready, 200, "the admin listener answers after a SIGHUP with a FIFO at the config path")
        wait_counts(proxy, 0, 1, what="the FIFO refused as a failed reload")
        self.assertEqual(served_by(proxy.port, "/"), (200, "a"))
        proxy.signal(signal.SIGTERM)
        self.assertEqual(proxy.wait(5), 0)

    def test_a_1_mib_file_neither_freezes_the_admin_endpoints_nor_keeps_its_parse_memory(self):
        # The file is parsed (yaml-cpp) on the main loop: about 2.5 s and 160 MB per MiB of a
        # long flow sequence (a JSON file is YAML), far below the 4 MiB cap; the memory is
        # freed but stays in the process (RSS) after the file is refused.
        a = self.backend("a")
        proxy = self.start(routes=routes(("all", "/", "a")), upstreams=upstreams(("a", a.address)))
        real = os.path.realpath(proxy.config_path)
        with open(real) as f:
            valid = f.read()
        write(real, valid + "extra: [" + ", ".join(["1"] * 350000) + "]\n")  # 1 MiB, refused
        rss = proxy.rss_kib()
        proxy.signal(signal.SIGHUP)
        time.sleep(0.1)
        started = time.time()
        answer = request(proxy.admin_port, "GET", "/healthz", timeout=60)[0]
        waited = time.time() - started
        self.assertEqual(answer, 200)
        self.assertLess(waited, 0.3, "/healthz answered %.2f s late while a 1 MiB file was loaded" % waited)
        deadline = time.time() + 60
        while time.time() < deadline:  # the reload ends (refused: `extra` is not a key)
            try:
                if json.loads(request(proxy.admin_port, "GET", "/status", timeout=60)[2])["reload"]["failure"]:
                    break
            except socket.timeout:
                pass
            time.sleep(0.1)
        self.assertEqual(counts(proxy), (0, 1))
        if not SANITIZED:
            grown = proxy.rss_kib() - rss
            self.assertLess(grown, 100 * 1024, "RSS after refusing a 1 MiB file grew %d KiB" % grown)

    def test_a_file_truncated_then_written_is_not_counted_as_a_failed_reload(self):
        # The watcher settles on bytes that held still for 200 ms, except empty ones: an empty
        # read equals the cleared settling_text_, so the truncated file is applied (and refused,
        # counted as a failure that an alert on the failure rate fires for) at once.
        a, b = self.backend("a"), self.backend("b")
        ups = upstreams(("a", a.address), ("b", b.address))
        proxy = self.start(write_config=plain_file, routes=routes(("all", "/", "a")), upstreams=ups)
        new = proxy.render(TEMPLATE, routes=routes(("all", "/", "b")), upstreams=ups)
        with open(proxy.config_path, "w") as f:  # what `cat > file`, cp or a template tool does
            f.flush()
            time.sleep(0.3)  # one debounce period has passed: the watcher reads the empty file
            f.write(new)
        wait_served_by(proxy.port, "/", "b", what="the written file loaded")
        time.sleep(0.5)
        self.assertEqual(counts(proxy), (1, 0), "one successful reload and no failure (stderr ends:\n%s)"
                         % stderr_tail(proxy, 6))

    def test_a_change_written_while_bulwark_starts_is_applied(self):
        # main() parses the file; Server::run reads it again much later (after binding, DNS,
        # building the workers' routers) to remember "the bytes last read", and only then
        # starts the watch. A change in between is never applied (same bytes as "last read")
        # and nothing says so: the process serves the old file until the next change.
        a, b = self.backend("a"), self.backend("b")
        ups = upstreams(("a", a.address), ("b", b.address))
        many = [("r%d" % i, "/r%d" % i, "a") for i in range(3000)]  # a start that takes a while
        proxy = Bulwark(TEMPLATE, wait_ready=False, write_config=plain_file,
                        **dict(DEFAULTS, workers=2, routes=routes(*many, ("all", "/", "a")), upstreams=ups))
        self.addCleanup(proxy.stop)
        wait_for(lambda: "listening on" in proxy.stderr_text(), timeout=30, interval=0.0005,
                 what="the listener bound (the config was read)")
        write_atomic(proxy.config_path, proxy.render(TEMPLATE, routes=routes(*many, ("all", "/", "b")), upstreams=ups))
        proxy.wait_ready(timeout=30)
        # Parsing and building 3000 routes twice (the first reload waits for the file to hold
        # still) took more than 3 s in an ASan build on a busy 2-core CI machine.
        wait_served_by(proxy.port, "/", "b", timeout=20, what="the file written during the start applied")
        self.assertEqual(counts(proxy), (1, 0))

    def test_the_watch_goes_on_after_the_config_directory_is_replaced(self):
        # ConfigWatcher watches the directory's inode: once that directory is removed (or a
        # directory is renamed over it, or a symlinked release directory is switched) nothing
        # is watched any more, and nothing says so.
        a, b = self.backend("a"), self.backend("b")
        ups = upstreams(("a", a.address), ("b", b.address))
        proxy = self.start(write_config=plain_file, routes=routes(("all", "/", "a")), upstreams=ups)
        etc = os.path.dirname(proxy.config_path)
        shutil.rmtree(etc)
        os.mkdir(etc)
        write(proxy.config_path, proxy.render(TEMPLATE, routes=routes(("all", "/", "b")), upstreams=ups))
        wait_served_by(proxy.port, "/", "b", what="the file in the new directory loaded")
        time.sleep(0.5)
        write(proxy.config_path, proxy.render(TEMPLATE, routes=routes(("x", "/x", "a"), ("all", "/", "b")), upstreams=ups))
        wait_served_by(proxy.port, "/x", "a", what="a later edit of the file in the new directory loaded")
        self.assertEqual(counts(proxy), (2, 0))


if __name__ == "__main__":
    unittest.main()
