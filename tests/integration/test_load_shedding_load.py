"""Adaptive load shedding under open-loop load (shed_experiment.py): bulwark-testd serves
C = 10 requests at once, 25 ms each (400 requests/s), and queues the rest without bound.
Bulwark with the default `load_shedding` (gradient2) takes 0.5x, 2x and 5x that throughput,
10 s each, with 10 % critical, 50 % normal and 40 % sheddable requests, then 2x again while
the backend's capacity halves; the same 2x load without shedding is the comparison.

Checked (after the first second of each level, the limit's time to adapt):
  - at 0.5x nothing is shed;
  - at 2x and 5x: critical >= 99 % success, p99 of the admitted requests <= 3x the p99 at
    0.5x, sheddable is refused first (more than its share of the rejections; at 5x its 40 %
    of the traffic is about half of what must be refused even with strict priorities);
  - after the capacity halves, the limit settles within 2 s at a lower value;
  - without shedding, the same 2x load drives latency into the client timeouts."""
import os
import unittest

from shed_experiment import Experiment

LEVEL_S = 10.0
SKIP_S = 1.0


class AdaptiveShedding(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.x = Experiment(capacity=10, service_ms=25, shedding=True)
        x = cls.x
        cap = x.throughput
        try:
            cls.low = x.run("0.5x", 0.5 * cap, LEVEL_S)
            cls.double = x.run("2x", 2 * cap, LEVEL_S)
            cls.quintuple = x.run("5x", 5 * cap, LEVEL_S)
            cls.step_at = 5.0
            cls.step = x.run("2x-halved", 2 * cap, 12.0, step_at=cls.step_at, step_capacity=5)
        finally:
            x.close()
        if os.environ.get("BULWARK_SHED_VERBOSE"):
            for level in x.levels:
                print(level.stats(SKIP_S))

    def test_below_capacity_nothing_is_shed(self):
        s = self.low.stats(SKIP_S)
        self.assertEqual(s["shed"], 0, s)
        self.assertEqual(s["timeouts"], 0, s)
        self.assertEqual(s["other_failures"], 0, s)
        # The unloaded latency is the service time, plus little.
        self.assertLess(s["p99_ms"], 25 * 3, s)

    def check_overload(self, level):
        base = self.low.stats(SKIP_S)
        s = level.stats(SKIP_S)
        self.assertGreaterEqual(s["success"]["critical"], 0.99, s)
        self.assertLessEqual(s["p99_ms"], 3 * base["p99_ms"], (s, base))
        self.assertEqual(s["timeouts"], 0, s)
        # The backend is kept busy: goodput near its capacity (not starved by over-shedding).
        self.assertGreater(s["goodput_rps"], 0.7 * self.x.throughput, s)
        rows = level.window(SKIP_S)
        shed = [r for r in rows if r[3] == "overloaded"]
        self.assertGreater(len(shed), 0, s)
        by_priority = {p: sum(1 for r in shed if r[4] == p) for p in ("critical", "normal", "sheddable")}
        # Sheddable is 40 % of the traffic, but is refused first: a larger share of the
        # rejections than of the traffic, and a lower success ratio than normal.
        self.assertGreater(by_priority["sheddable"], 0.45 * len(shed), by_priority)
        self.assertGreater(s["success"]["normal"], s["success"]["sheddable"], s)
        return s

    def test_twice_the_capacity(self):
        self.check_overload(self.double)

    def test_five_times_the_capacity(self):
        self.check_overload(self.quintuple)

    def test_the_limit_follows_a_capacity_cut(self):
        start = self.step.start
        cut = start + self.step_at
        before = [s[1] for s in self.x.limit_samples(start + 1.0, cut)]
        after = [s[1] for s in self.x.limit_samples(cut + 2.0, start + self.step.duration)]
        self.assertTrue(before and after)
        before.sort()
        after.sort()
        median_before = before[len(before) // 2]
        median_after = after[len(after) // 2]
        self.assertLess(median_after, 0.8 * median_before, (before, after))
        # Settled: from 2 s after the cut on, the limit stays near its level (probes excepted:
        # a probe halves it for one round, and the samples may catch one).
        near = [v for v in after if 0.6 * median_after <= v <= 1.4 * median_after]
        self.assertGreaterEqual(len(near), 0.85 * len(after), after)
        s = self.step.stats(SKIP_S)
        self.assertGreaterEqual(s["success"]["critical"], 0.99, s)
        self.assertEqual(s["timeouts"], 0, s)


class WithoutShedding(unittest.TestCase):
    def test_the_same_overload_without_shedding_times_out(self):
        x = Experiment(capacity=10, service_ms=25, shedding=False, timeout_ms=3000)
        try:
            level = x.run("2x-unprotected", 2 * x.throughput, LEVEL_S)
        finally:
            x.close()
        s = level.stats(SKIP_S)
        if os.environ.get("BULWARK_SHED_VERBOSE"):
            print(s)
        # The backend's queue grows by 400 requests a second: latency climbs past the clients'
        # 3 s timeout, and critical requests fail with the rest.
        self.assertGreater(s["timeouts"], 0.2 * level.rate * (LEVEL_S - SKIP_S), s)
        self.assertLess(s["success"]["critical"], 0.9, s)


if __name__ == "__main__":
    unittest.main()
