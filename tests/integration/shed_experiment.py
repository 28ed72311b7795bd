"""The load-shedding experiment: bulwark-testd in capacity mode (C requests served at once,
each `service_ms` long, the rest queued without bound: a backend past its knee), Bulwark in
front of it (with or without `load_shedding`), and bulwark-load offering open-loop load (the
arrival rate never slows down when the proxy does) with a priority mix, level after level.
While it runs, Bulwark's /status is sampled ten times a second (limit, in flight, queued).

Used by tests/integration/test_load_shedding_load.py (short levels, assertions) and by
scripts/shedding_report.py (the figures and the plot in docs/resilience.md)."""
import csv
import json
import os
import subprocess
import tempfile
import threading
import time

from harness import Bulwark, Testd, request

LOAD = os.environ.get("BULWARK_LOAD", os.path.join(os.path.dirname(__file__), "../../build/bulwark-load"))

MIX = "critical=0.1,normal=0.5,sheddable=0.4"
PRIORITIES = ("critical", "normal", "sheddable")

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
workers: {workers}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - name: all
        match: {{ prefix: / }}
        upstream: app
        timeout: 30s
upstreams:
  - name: app
    endpoints: [{upstream}]
    pool: {{ max_connections: 4096, max_idle: 512 }}
    limits: {{ max_requests: 100000, max_pending: 100000, pending_timeout: 30s }}
{shedding}
"""

SHEDDING = "    load_shedding: {{ algorithm: {algorithm} }}"


class Sampler(threading.Thread):
    """Samples /status every `interval` seconds: (t, limit, in_flight, queued, rtt avg us)."""

    def __init__(self, proxy, t0, interval=0.1):
        super().__init__(daemon=True)
        self.proxy, self.t0, self.interval = proxy, t0, interval
        self.samples = []
        self.stop_event = threading.Event()
        self.start()

    def run(self):
        while not self.stop_event.is_set():
            try:
                _, _, body = request(self.proxy.admin_port, "GET", "/status", timeout=2)
                up = json.loads(body)["upstreams"][0]
                s = up["load_shedding"]
                t = time.time() - self.t0
                if s:
                    self.samples.append((t, s["limit"], s["in_flight"], s["queued"], s["rtt_us"]["avg"]))
                else:
                    self.samples.append((t, None, up["in_flight"], up["pending"], None))
            except (OSError, ValueError, KeyError):
                pass
            self.stop_event.wait(self.interval)

    def stop(self):
        self.stop_event.set()
        self.join(5)


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100.0 * len(values)))]


class Level:
    """One level's results, from bulwark-load's per-request CSV (times from the run start)."""

    def __init__(self, name, rate, start, duration, rows, summary):
        self.name, self.rate, self.start, self.duration = name, rate, start, duration
        self.rows = rows  # (t_sched_s absolute to the experiment, latency_s, status, reason, priority)
        self.summary = summary

    def window(self, skip=0.0):
        return [r for r in self.rows if r[0] >= self.start + skip]

    def stats(self, skip=0.0):
        rows = self.window(skip)
        span = self.duration - skip
        ok = [r for r in rows if 200 <= r[2] < 300]
        out = {
            "level": self.name,
            "offered_rps": round(len(rows) / span, 1),
            "goodput_rps": round(len(ok) / span, 1),
            "p50_ms": round(percentile([r[1] for r in ok], 50) * 1000, 1) if ok else None,
            "p99_ms": round(percentile([r[1] for r in ok], 99) * 1000, 1) if ok else None,
            "shed": sum(1 for r in rows if r[3] == "overloaded"),
            "timeouts": sum(1 for r in rows if r[3] == "timeout"),
            "other_failures": sum(1 for r in rows if not (200 <= r[2] < 300) and r[3] not in ("overloaded", "timeout")),
            "success": {},
        }
        for p in PRIORITIES:
            mine = [r for r in rows if r[4] == p]
            good = sum(1 for r in mine if 200 <= r[2] < 300)
            out["success"][p] = round(good / len(mine), 4) if mine else None
        return out


class Experiment:
    def __init__(self, capacity=10, service_ms=25, shedding=True, algorithm="gradient2",
                 workers=2, timeout_ms=5000, mix=MIX):
        self.capacity, self.service_ms = capacity, service_ms
        self.timeout_ms, self.mix = timeout_ms, mix
        self.dir = tempfile.mkdtemp(prefix="bulwark-shed-")
        self.backend = Testd("--capacity", str(capacity), "--service-ms", str(service_ms))
        shed = SHEDDING.format(algorithm=algorithm) if shedding else ""
        self.proxy = Bulwark(TEMPLATE, upstream=self.backend.address, workers=workers,
                             shedding=shed.replace("{{", "{").replace("}}", "}"))
        self.t0 = time.time()
        self.sampler = Sampler(self.proxy, self.t0)
        self.levels = []
        self.events = []  # (t, text)

    @property
    def throughput(self):
        """Requests per second the backend can serve."""
        return self.capacity * 1000.0 / self.service_ms

    def set_capacity(self, c):
        status, _, _ = request(self.backend.port, "GET", "/__capacity?c=%d" % c)
        assert status == 200
        self.events.append((time.time() - self.t0, "capacity %d" % c))

    def run(self, name, rate, duration, step_at=None, step_capacity=None):
        """Offers `rate` requests/s for `duration` s; with step_at, the backend's capacity
        becomes step_capacity that many seconds in."""
        out = os.path.join(self.dir, name + ".csv")
        start = time.time() - self.t0
        timer = None
        if step_at is not None:
            timer = threading.Timer(step_at, self.set_capacity, args=(step_capacity,))
            timer.start()
        proc = subprocess.run(
            [LOAD, "--url", "http://127.0.0.1:%d/work" % self.proxy.port, "--rate", str(rate),
             "--duration", str(duration), "--timeout-ms", str(self.timeout_ms), "--mix", self.mix,
             "--max-conns", "4000", "--out", out],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=duration + 60)
        if timer:
            timer.join()
        if proc.returncode != 0:
            raise RuntimeError("bulwark-load failed: %s" % proc.stderr.decode(errors="replace"))
        summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
        rows = []
        with open(out) as f:
            for r in csv.DictReader(f):
                rows.append((start + float(r["sched_ms"]) / 1000.0, float(r["latency_us"]) / 1e6,
                             int(r["status"]), r["reason"], r["priority"]))
        level = Level(name, rate, start, duration, rows, summary)
        self.levels.append(level)
        return level

    def limit_samples(self, since, until=None):
        return [s for s in self.sampler.samples
                if s[0] >= since and (until is None or s[0] < until) and s[1] is not None]

    def metric(self, name, **labels):
        return self.proxy.metric(name, **labels)

    def close(self):
        self.sampler.stop()
        self.proxy.stop()
        self.backend.stop()

    def series(self):
        """Per-second series over the whole experiment, for plots."""
        rows = [r for level in self.levels for r in level.rows]
        if not rows:
            return []
        end = int(max(r[0] for r in rows)) + 1
        out = []
        for sec in range(end):
            in_sec = [r for r in rows if sec <= r[0] < sec + 1]
            ok = [r[1] for r in in_sec if 200 <= r[2] < 300]
            lim = [s for s in self.sampler.samples if sec <= s[0] < sec + 1 and s[1] is not None]
            inf = [s for s in self.sampler.samples if sec <= s[0] < sec + 1]
            out.append({
                "t": sec,
                "offered": len(in_sec),
                "ok": len(ok),
                "shed": sum(1 for r in in_sec if r[3] == "overloaded"),
                "failed": sum(1 for r in in_sec if not (200 <= r[2] < 300) and r[3] != "overloaded"),
                "p50_ms": percentile(ok, 50) * 1000 if ok else None,
                "p99_ms": percentile(ok, 99) * 1000 if ok else None,
                "limit": sum(s[1] for s in lim) / len(lim) if lim else None,
                "in_flight": sum(s[2] for s in inf) / len(inf) if inf else None,
                "queued": sum(s[3] for s in inf) / len(inf) if inf else None,
            })
        return out
