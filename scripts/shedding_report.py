#!/usr/bin/env python3
"""The load-shedding figures and plot of docs/resilience.md, from one run of the experiment in
tests/integration/shed_experiment.py: bulwark-testd serving C = 10 requests at once, 25 ms
each (400 requests/s), Bulwark with `load_shedding` (default gradient2) in front, open-loop
load of 10 % critical, 50 % normal and 40 % sheddable requests at 0.5x, 2x and 5x the
backend's throughput, then 2x while the capacity halves; and the same 2x and 5x loads without
shedding for comparison.

Usage: scripts/shedding_report.py [--level-seconds S] [--png FILE] [--build DIR]
Prints a Markdown table and writes the PNG (limit, in flight, latency and shed rate over time).
Run through scripts/shedding_report.sh, which installs matplotlib and builds first."""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--level-seconds", type=float, default=15.0)
    ap.add_argument("--png", default=os.path.join(ROOT, "docs", "images", "load-shedding.png"))
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    os.environ.setdefault("BULWARK_BIN", os.path.join(args.build, "bulwark"))
    os.environ.setdefault("BULWARK_TESTD", os.path.join(args.build, "bulwark-testd"))
    os.environ.setdefault("BULWARK_LOAD", os.path.join(args.build, "bulwark-load"))
    from shed_experiment import Experiment

    n = args.level_seconds
    x = Experiment(capacity=10, service_ms=25, shedding=True)
    cap = x.throughput
    try:
        x.run("0.5x", 0.5 * cap, n)
        x.run("2x", 2 * cap, n)
        x.run("5x", 5 * cap, n)
        x.run("2x, C halves", 2 * cap, n + 5, step_at=5.0, step_capacity=5)
    finally:
        x.close()
    step = x.levels[-1]
    cut = step.start + 5.0
    before = sorted(s[1] for s in x.limit_samples(step.start + 1, cut))
    after_samples = x.limit_samples(cut, step.start + step.duration)
    after = sorted(s[1] for s in after_samples if s[0] >= cut + 2)
    settled = after[len(after) // 2] if after else None
    # How long after the cut the limit came down for good: the first moment from which it never
    # again exceeds 1.4 x where it settled (probes only ever cut it further).
    settle_s = None
    if settled:
        for i, s in enumerate(after_samples):
            if all(r[1] <= 1.4 * settled for r in after_samples[i:]):
                settle_s = s[0] - cut
                break

    plain = []
    for rate_x in (2, 5):
        y = Experiment(capacity=10, service_ms=25, shedding=False, timeout_ms=5000)
        try:
            plain.append(y.run("%dx, no shedding" % rate_x, rate_x * cap, n))
        finally:
            y.close()

    rows = [level.stats(1.0) for level in x.levels] + [level.stats(1.0) for level in plain]
    print("| load | shedding | goodput (req/s) | p50 / p99 of admitted (ms) | success critical / normal / sheddable | shed | client timeouts (5 s) |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        sc = r["success"]
        print("| %s | %s | %.0f | %s / %s | %.1f %% / %.1f %% / %.1f %% | %d | %d |" % (
            r["level"].split(",")[0] if i >= len(x.levels) else r["level"],
            "no" if i >= len(x.levels) else "gradient2",
            r["goodput_rps"], r["p50_ms"], r["p99_ms"],
            100 * sc["critical"], 100 * sc["normal"], 100 * sc["sheddable"],
            r["shed"], r["timeouts"]))
    print()
    print("limit before the cut (median): %s; after it: %s; at most 1.4 x that from %.1f s after the cut on"
          % (before[len(before) // 2] if before else None, settled, settle_s if settle_s is not None else -1))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = x.series()
    t = [s["t"] for s in series]
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    ax = axes[0]
    ax.plot(t, [s["offered"] for s in series], label="offered", color="0.5")
    ax.plot(t, [s["ok"] for s in series], label="served (2xx)", color="tab:green")
    ax.plot(t, [s["shed"] for s in series], label="shed (503 overloaded)", color="tab:red")
    ax.set_ylabel("requests / s")
    ax.legend(loc="center left")
    ax.set_title("Bulwark load shedding: backend of capacity C=10 x 25 ms (400 req/s), open-loop load")
    ax = axes[1]
    ax.plot(t, [s["p50_ms"] for s in series], label="p50 of admitted", color="tab:blue")
    ax.plot(t, [s["p99_ms"] for s in series], label="p99 of admitted", color="tab:purple")
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper left")
    ax = axes[2]
    ts = [s[0] for s in x.sampler.samples if s[1] is not None]
    ax.plot(ts, [s[1] for s in x.sampler.samples if s[1] is not None], label="concurrency limit", color="tab:orange")
    ax.plot(ts, [s[2] for s in x.sampler.samples if s[1] is not None], label="in flight", color="tab:cyan", alpha=0.7)
    ax.plot(ts, [s[3] for s in x.sampler.samples if s[1] is not None], label="queued", color="0.6", alpha=0.7)
    ax.set_ylabel("requests")
    ax.set_xlabel("seconds")
    ax.legend(loc="upper left")
    for a in axes:
        for level in x.levels:
            a.axvline(level.start, color="0.85", linewidth=1)
        a.axvline(cut, color="tab:red", linestyle=":", linewidth=1)
    for level in x.levels:
        axes[0].text(level.start + 0.3, axes[0].get_ylim()[1] * 0.9, level.name, fontsize=8)
    axes[0].text(cut + 0.3, axes[0].get_ylim()[1] * 0.75, "C halves", fontsize=8, color="tab:red")
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.png), exist_ok=True)
    fig.savefig(args.png, dpi=90)
    print("plot: %s" % args.png)


if __name__ == "__main__":
    main()
