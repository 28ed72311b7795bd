"""bulwark-testd's capacity mode (--capacity, --service-ms, GET /__capacity) driven by the
open-loop generator bulwark-load: below the knee latency is the service time, above it the
FIFO queue grows and so does latency; a capacity cut mid-run shows up in the latencies."""
import csv
import json
import os
import subprocess
import tempfile
import time
import unittest

from harness import Testd, request

LOAD = os.environ.get("BULWARK_LOAD", os.path.join(os.path.dirname(__file__), "../../build/bulwark-load"))


def run_load(port, rate, duration, *extra, during=None):
    """Runs bulwark-load against testd; `during()` is called while it runs. Returns (summary,
    rows of the CSV as dicts with numbers)."""
    with tempfile.TemporaryDirectory(prefix="bulwark-load-") as d:
        out = os.path.join(d, "out.csv")
        args = [LOAD, "--url", "http://127.0.0.1:%d/work" % port, "--rate", str(rate),
                "--duration", str(duration), "--out", out, *extra]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if during:
            during()
        stdout, stderr = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise AssertionError("bulwark-load exited %s: %s" % (proc.returncode, stderr.decode()))
        summary = json.loads(stdout.decode().strip().splitlines()[-1])
        with open(out) as f:
            rows = [{"sched_ms": float(r["sched_ms"]), "latency_us": int(r["latency_us"]),
                     "status": int(r["status"]), "reason": r["reason"], "priority": r["priority"]}
                    for r in csv.DictReader(f)]
    return summary, rows


def capacity(port, query=""):
    status, _, body = request(port, "GET", "/__capacity" + query)
    return status, json.loads(body)


class CapacityTest(unittest.TestCase):
    def setUp(self):
        self.backend = Testd("--capacity", "4", "--service-ms", "50")
        self.addCleanup(self.backend.stop)

    def test_below_capacity_latency_is_the_service_time(self):
        # 4 workers x 50 ms = 80 req/s; 40 req/s never queues.
        summary, rows = run_load(self.backend.port, 40, 2)
        self.assertEqual(summary["offered"], 80)
        self.assertEqual(summary["completed"], 80)
        self.assertEqual(summary["status"], {"200": 80})
        self.assertEqual(len(rows), 80)
        self.assertGreaterEqual(summary["p50_us"], 49000)
        self.assertLess(summary["p99_us"], 90000, summary)
        self.assertGreaterEqual(min(r["latency_us"] for r in rows), 49000)
        self.assertEqual(capacity(self.backend.port)[1],
                         {"capacity": 4, "service_ms": 50, "busy": 0, "queued": 0})

    def test_above_capacity_the_queue_grows(self):
        # 200 req/s offered, 80 served: the queue grows by 120 a second, and so does latency.
        seen = {}

        def during():
            time.sleep(1.5)
            seen["state"] = capacity(self.backend.port)[1]
            start = time.time()
            status = request(self.backend.port, "GET", "/healthz")[0]
            seen["healthz"] = (status, time.time() - start)

        summary, rows = run_load(self.backend.port, 200, 2, "--timeout-ms", "10000", during=during)
        self.assertEqual(summary["offered"], 400)
        self.assertEqual(summary["status"], {"200": 400}, summary)
        self.assertGreater(summary["p99_us"], 1000000, summary)  # seconds, not 50 ms
        # The server does 80 req/s whatever is offered.
        self.assertGreater(summary["achieved_rate"], 60, summary)
        self.assertLess(summary["achieved_rate"], 100, summary)
        first = [r["latency_us"] for r in rows[:40]]
        last = [r["latency_us"] for r in rows[-40:]]
        self.assertGreater(sum(last) / len(last), 10 * sum(first) / len(first))
        # Mid-run: all workers busy, a queue; /healthz and control paths do not wait in it.
        self.assertEqual(seen["state"]["capacity"], 4)
        self.assertEqual(seen["state"]["busy"], 4)
        self.assertGreater(seen["state"]["queued"], 50)
        self.assertEqual(seen["healthz"][0], 200)
        self.assertLess(seen["healthz"][1], 0.5)

    def test_capacity_halves_mid_run(self):
        # 60 req/s: under 80/s for the first second, over 40/s after c=2.
        seen = {}

        def during():
            time.sleep(1.0)
            seen["set"] = capacity(self.backend.port, "?c=2")
            time.sleep(1.0)
            seen["later"] = capacity(self.backend.port)[1]

        summary, rows = run_load(self.backend.port, 60, 3, "--timeout-ms", "10000", during=during)
        self.assertEqual(summary["status"], {"200": 180}, summary)
        status, state = seen["set"]
        self.assertEqual(status, 200)
        self.assertEqual(state["capacity"], 2)
        self.assertEqual(state["service_ms"], 50)
        self.assertEqual(seen["later"]["capacity"], 2)
        self.assertLessEqual(seen["later"]["busy"], 2)
        self.assertGreater(seen["later"]["queued"], 5)
        before = [r["latency_us"] for r in rows if r["sched_ms"] < 900]
        after = [r["latency_us"] for r in rows if r["sched_ms"] > 2500]
        self.assertLess(max(before), 150000, before)
        self.assertGreater(min(after), 300000, after)
        # Service time changes too; c=0 turns the mode off and drains the queue.
        self.assertEqual(capacity(self.backend.port, "?c=3&service_ms=20")[1]["service_ms"], 20)
        self.assertEqual(capacity(self.backend.port, "?c=0")[1]["capacity"], 0)
        start = time.time()
        self.assertEqual(request(self.backend.port, "GET", "/work")[0], 200)
        self.assertLess(time.time() - start, 0.04)
        self.assertEqual(capacity(self.backend.port, "?c=x")[0], 400)

    def test_per_request_delay_adds_to_the_service_time(self):
        start = time.time()
        status = request(self.backend.port, "GET", "/work?delay=100&status=503")[0]
        elapsed = time.time() - start
        self.assertEqual(status, 503)
        self.assertGreaterEqual(elapsed, 0.149)
        self.assertLess(elapsed, 0.5)


if __name__ == "__main__":
    unittest.main()
