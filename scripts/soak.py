#!/usr/bin/env python3
"""Soak run driven by scripts/soak.sh: Bulwark in front of bulwark-testd (and redis-server
for a global rate limit), mixed traffic for --duration seconds, the bulwark process's RSS
and descriptor count sampled every --interval seconds to a CSV, then a PNG plot and a
summary. See docs/reliability.md ("Soak")."""
import argparse
import csv
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import harness  # noqa: E402
from harness import Bulwark, Reader, connect, free_port, request  # noqa: E402

CONFIG = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
{redis_block}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    timeouts: {{ header: 2s, idle: 10s, body_idle: 5s }}
    routes:
      - name: global
        match: {{ prefix: /global }}
        upstream: app
        timeout: 10s
        {global_limit}
      - name: all
        match: {{ prefix: / }}
        upstream: app
        timeout: 10s
        retry: {{ attempts: {attempts}, on: [connect-failure, reset] }}
        rate_limit: {{ rate: 5000/s, burst: 5000, key: client_ip }}
upstreams:
  - name: app
    endpoints: [{upstream}]
    connect_timeout: 500ms
    pool: {{ max_idle: {max_idle}, idle_timeout: {pool_idle} }}
"""


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.requests = 0

    def add(self, kind):
        with self.lock:
            self.requests += 1
            self.counts[kind] = self.counts.get(kind, 0) + 1


def classify(status, headers, expected=200):
    reason = headers.get("x-bulwark-reason")
    if reason:
        return "local %d %s" % (status, reason)
    return "ok" if status == expected else "status %d" % status


def error_kind(e):
    if isinstance(e, socket.timeout):
        return "error timeout"
    if isinstance(e, EOFError):
        return "error closed"
    if isinstance(e, ConnectionResetError):
        return "error reset"
    return "error " + type(e).__name__


class Soak:
    def __init__(self, args):
        self.args = args
        self.stats = Stats()
        self.stop = threading.Event()
        self.events = []  # (t, label)
        self.t0 = time.time()
        self.testd_port = free_port()
        self.redis = None
        if shutil.which("redis-server"):
            self.redis_port = free_port()
            self.start_redis()
        self.start_testd()
        self.values = dict(upstream="127.0.0.1:%d" % self.testd_port,
                           redis_block=("redis: {{ address: 127.0.0.1:%d, timeout: 20ms }}" % self.redis_port
                                        if self.redis else ""),
                           global_limit=("rate_limit: {{ rate: 300/s, burst: 300, key: route, scope: global, "
                                         "on_redis_failure: local }}" if self.redis else ""))
        self.generation = 0
        self.proxy = Bulwark(CONFIG, **self.config_values())
        print("bulwark pid %d on :%d, testd :%d, redis %s, output %s" % (
            self.proxy.proc.pid, self.proxy.port, self.testd_port,
            ":%d" % self.redis_port if self.redis else "none", args.out), flush=True)

    def config_values(self):
        g = self.generation
        v = dict(self.values, attempts=2 + g % 2, max_idle=16 + 16 * (g % 2),
                 pool_idle="%ds" % (20 + 10 * (g % 3)))
        # Bulwark.__init__ fills {port} {admin} {log}; later renders reuse them.
        return {k: (x.replace("{{", "{").replace("}}", "}") if isinstance(x, str) else x)
                for k, x in v.items()}

    def start_redis(self):
        self.redis = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--save", "",
                                       "--appendonly", "no", "--bind", "127.0.0.1"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_testd(self):
        self.testd = subprocess.Popen([harness.TESTD, "--port", str(self.testd_port), "--name", "soak",
                                       "--idle-close", "15000"],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.testd.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError("testd did not start: %r" % line)

    def event(self, label):
        self.events.append((time.time() - self.t0, label))
        print("%7.1fs %s" % (time.time() - self.t0, label), flush=True)

    # --- traffic -----------------------------------------------------------------
    def sleep(self, s):
        self.stop.wait(s)

    def keepalive_client(self, seed):
        rng = random.Random(seed)
        while not self.stop.is_set():
            try:
                s = connect(self.proxy.port, timeout=15)
            except OSError as e:
                self.stats.add(error_kind(e))
                self.sleep(0.2)
                continue
            r = Reader(s)
            try:
                for _ in range(rng.randint(5, 200)):
                    if self.stop.is_set():
                        break
                    path = rng.choice(["/ka?size=%d" % rng.randint(0, 20000), "/global/ka?size=100"])
                    s.sendall(("GET %s HTTP/1.1\r\nHost: soak\r\n\r\n" % path).encode())
                    status, h, body = r.read_response()
                    kind = classify(status, h)
                    if kind == "ok" and "x-testd-crc32" in h and harness.crc_hex(body) != h["x-testd-crc32"]:
                        kind = "error corrupt body"
                    self.stats.add(kind)
                    if h.get("connection") == "close":
                        break
                    self.sleep(rng.uniform(0.002, 0.02))
            except Exception as e:  # noqa: BLE001
                self.stats.add(error_kind(e))
            finally:
                s.close()

    def newconn_client(self, seed):
        rng = random.Random(seed)
        while not self.stop.is_set():
            path = rng.choice(["/n?size=%d" % rng.randint(0, 5000), "/global/n", "/n?delay=20"])
            try:
                status, h, body = request(self.proxy.port, "GET", path, timeout=15)
                self.stats.add(classify(status, h))
            except Exception as e:  # noqa: BLE001
                self.stats.add(error_kind(e))
            self.sleep(rng.uniform(0.005, 0.03))

    def chaos_client(self, seed):
        """Large bodies, slow clients, client resets, backend resets."""
        rng = random.Random(seed)
        while not self.stop.is_set():
            kind = rng.choice(["large-get", "large-post", "slow-head", "too-slow-head",
                               "client-rst", "backend-reset", "backend-reset-mid"])
            try:
                if kind == "large-get":
                    size = rng.choice([2, 4, 8]) << 20
                    status, h, body = request(self.proxy.port, "GET", "/large?size=%d" % size, timeout=30)
                    k = classify(status, h)
                    if k == "ok" and (len(body) != size or harness.crc_hex(body) != h["x-testd-crc32"]):
                        k = "error corrupt body"
                    self.stats.add(k)
                elif kind == "large-post":
                    body = os.urandom(1 << 20)
                    status, h, got = request(self.proxy.port, "POST", "/echo?echo=1", body=body, timeout=30)
                    k = classify(status, h)
                    if k == "ok" and got != body:
                        k = "error corrupt body"
                    self.stats.add(k)
                elif kind in ("slow-head", "too-slow-head"):
                    s = connect(self.proxy.port, timeout=15)
                    try:
                        head = b"GET /slow HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n"
                        gap = 0.01 if kind == "slow-head" else 0.06  # 2 s header timeout
                        for i in range(len(head)):
                            s.send(head[i:i + 1])
                            if self.stop.wait(gap):
                                break
                            if kind == "too-slow-head" and i > 40:
                                break  # stop just short, then wait for the 408
                        status, h, _ = Reader(s).read_response()
                        k = classify(status, h)
                        self.stats.add(k if kind == "slow-head" else "expected " + k)
                    finally:
                        s.close()
                elif kind == "client-rst":
                    s = connect(self.proxy.port, timeout=15)
                    s.sendall(b"GET /rst?size=4000000 HTTP/1.1\r\nHost: soak\r\n\r\n")
                    Reader(s).read_head()
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.close()
                    self.stats.add("expected client reset")
                elif kind == "backend-reset":
                    status, h, _ = request(self.proxy.port, "GET", "/r?reset=before", timeout=15)
                    self.stats.add("expected " + classify(status, h))
                else:
                    s = connect(self.proxy.port, timeout=15)
                    try:
                        s.sendall(b"GET /r?reset=after&size=300000 HTTP/1.1\r\nHost: soak\r\n\r\n")
                        status, h, body = Reader(s).read_response()
                        self.stats.add("error truncated body passed as complete" if status == 200
                                       else "expected " + classify(status, h))
                    except (EOFError, ConnectionResetError):
                        self.stats.add("expected body cut short")
                    finally:
                        s.close()
            except Exception as e:  # noqa: BLE001
                self.stats.add(error_kind(e) + " (" + kind + ")")
            self.sleep(rng.uniform(0.05, 0.3))

    # --- control -----------------------------------------------------------------
    def controller(self):
        next_reload = self.args.reload_every
        next_restart = self.args.restart_every
        next_redis = self.args.restart_every * 0.75
        while not self.stop.wait(1.0):
            t = time.time() - self.t0
            if t >= self.args.duration - 2:
                return
            if t >= next_reload:
                next_reload += self.args.reload_every
                self.generation += 1
                with open(self.proxy.config_path, "w") as f:
                    f.write(self.proxy.render(CONFIG, **self.config_values()))
                self.proxy.signal(signal.SIGHUP)
                self.event("reload %d (SIGHUP)" % self.generation)
            if t >= next_restart:
                next_restart += self.args.restart_every
                self.testd.kill()
                self.testd.wait()
                self.testd.stdout.close()
                self.event("backend killed")
                self.stop.wait(1.0)
                self.start_testd()
                self.event("backend restarted")
            if self.redis and t >= next_redis:
                next_redis += self.args.restart_every * 1.5
                self.redis.kill()
                self.redis.wait()
                self.event("redis killed")
                self.stop.wait(2.0)
                self.start_redis()
                self.event("redis restarted")

    def sampler(self, writer, f):
        pid = self.proxy.proc.pid
        while True:
            t = time.time() - self.t0
            try:
                fds = len(os.listdir("/proc/%d/fd" % pid))
                rss = harness_rss(pid)
            except FileNotFoundError:
                self.event("bulwark is gone")
                return
            with self.stats.lock:
                reqs = self.stats.requests
                errs = sum(v for k, v in self.stats.counts.items() if k.startswith("error"))
            writer.writerow(["%.1f" % t, rss, fds, reqs, errs])
            f.flush()
            self.samples.append((t, rss, fds, reqs, errs))
            if self.stop.wait(self.args.interval):
                return

    def run(self):
        os.makedirs(self.args.out, exist_ok=True)
        self.samples = []
        csv_path = os.path.join(self.args.out, "soak.csv")
        f = open(csv_path, "w", newline="")
        writer = csv.writer(f)
        writer.writerow(["seconds", "rss_kib", "fds", "requests", "errors"])
        threads = [threading.Thread(target=self.sampler, args=(writer, f)),
                   threading.Thread(target=self.controller)]
        threads += [threading.Thread(target=self.keepalive_client, args=(i,)) for i in range(3)]
        threads += [threading.Thread(target=self.newconn_client, args=(10 + i,)) for i in range(2)]
        threads += [threading.Thread(target=self.chaos_client, args=(20 + i,)) for i in range(2)]
        for t in threads:
            t.daemon = True
            t.start()
        crashed = False
        try:
            deadline = self.t0 + self.args.duration
            while time.time() < deadline:
                if self.proxy.proc.poll() is not None:
                    crashed = True
                    self.event("bulwark exited with %s" % self.proxy.proc.returncode)
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.event("interrupted")
        self.stop.set()
        for t in threads:
            t.join(40)
        # Clients gone: let connections settle, one last sample.
        time.sleep(3)
        if self.proxy.proc.poll() is None:
            pid = self.proxy.proc.pid
            t = time.time() - self.t0
            row = (t, harness_rss(pid), len(os.listdir("/proc/%d/fd" % pid)), self.stats.requests,
                   sum(v for k, v in self.stats.counts.items() if k.startswith("error")))
            writer.writerow(["%.1f" % row[0]] + list(row[1:]))
            self.samples.append(row)
        f.close()
        self.reloads = None
        if self.proxy.proc.poll() is None:
            try:
                import json
                self.reloads = json.loads(request(self.proxy.admin_port, "GET", "/status")[2])["reload"]
            except Exception as e:  # noqa: BLE001
                self.reloads = repr(e)
        code = self.proxy.stop()
        self.testd.kill()
        self.testd.wait()
        if self.redis:
            self.redis.kill()
            self.redis.wait()
        png = os.path.join(self.args.out, "soak.png")
        plotted = plot(self.samples, self.events, png)
        self.summary(csv_path, png if plotted else None, code, crashed)
        return 1 if crashed or code not in (0, None) else 0

    def summary(self, csv_path, png, code, crashed):
        s = self.samples
        rss = [r[1] for r in s]
        fds = [r[2] for r in s]
        print()
        print("duration        %.0f s, %d samples" % (s[-1][0], len(s)))
        print("RSS (MiB)       start %.1f  end %.1f  max %.1f" % (rss[0] / 1024, rss[-1] / 1024, max(rss) / 1024))
        print("fds             start %d  end %d  max %d" % (fds[0], fds[-1], max(fds)))
        print("requests        %d" % self.stats.requests)
        print("answers by kind:")
        for k, v in sorted(self.stats.counts.items(), key=lambda kv: -kv[1]):
            print("  %8d  %s" % (v, k))
        errors = sum(v for k, v in self.stats.counts.items() if k.startswith("error"))
        print("unexpected errors %d (kinds starting with 'error'); events: %d reloads, %d backend restarts"
              % (errors, sum(1 for _, e in self.events if e.startswith("reload")),
                 sum(1 for _, e in self.events if e == "backend restarted")))
        print("reloads         %s" % (self.reloads,))
        print("bulwark exit    %s%s" % (code, " (CRASHED during the run)" if crashed else ""))
        print("CSV             %s" % csv_path)
        print("PNG             %s" % (png or "(not made: matplotlib missing)"))


def harness_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def plot(samples, events, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        print("no plot: %r" % e)
        return False
    t = [r[0] / 60 for r in samples]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].plot(t, [r[1] / 1024 for r in samples], color="tab:blue")
    axes[0].set_ylabel("RSS (MiB)")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t, [r[2] for r in samples], color="tab:orange")
    axes[1].set_ylabel("open fds")
    axes[1].set_ylim(bottom=0)
    rate = [0] + [(samples[i][3] - samples[i - 1][3]) / max(samples[i][0] - samples[i - 1][0], 1e-9)
                  for i in range(1, len(samples))]
    axes[2].plot(t, rate, color="tab:green", label="requests/s")
    axes[2].plot(t, [r[4] for r in samples], color="tab:red", label="errors (cumulative)")
    axes[2].set_ylabel("traffic")
    axes[2].legend(loc="upper left", fontsize=8)
    axes[2].set_xlabel("minutes")
    colors = {"reload": "0.7", "backend": "tab:purple", "redis": "tab:brown"}
    for at, label in events:
        key = label.split()[0]
        if label.endswith("restarted") or key == "reload":
            for ax in axes:
                ax.axvline(at / 60, color=colors.get(key, "k"), lw=0.6, ls="--")
    fig.suptitle("Bulwark soak: RSS, descriptors, traffic (dashed: grey reload, purple backend "
                 "restart, brown Redis restart)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=1800)
    p.add_argument("--interval", type=float, default=5)
    p.add_argument("--reload-every", type=float, default=30)
    p.add_argument("--restart-every", type=float, default=120)
    p.add_argument("--out", default="soak-out")
    args = p.parse_args()
    sys.exit(Soak(args).run())


if __name__ == "__main__":
    main()
