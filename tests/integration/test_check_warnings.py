"""--check warns about risky but valid policies: exit 0, `FILE: ok` on stdout, and one line per
warning on stderr, `warning: FILE:LINE:COL: key.path: message`, pointing at the offending key.
The same warnings are logged (`config warning: ...`) at start and on a successful reload."""
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import BULWARK, Bulwark, wait_for

# Lines 1-6: a listener with the route "api"; ROUTE goes on from line 7 (8 spaces in), then the
# upstream "app" (3 lines), then UPSTREAM (4 spaces in).
HEAD = ("listeners:\n"
        "  - name: in\n"
        "    listen: 127.0.0.1:8080\n"
        "    routes:\n"
        "      - name: api\n"
        "        upstream: app\n")
UPSTREAM = ("upstreams:\n"
            "  - name: app\n"
            "    endpoints: [127.0.0.1:3000]\n")


def config(route="", upstream=""):
    return HEAD + route + UPSTREAM + upstream


# (name, config text, expected prefix after "warning: FILE:", a word of the reason)
CASES = [
    ("retry_budget_zero",
     config("        retry:\n          budget: { ratio: 0%, min_per_second: 0 }\n"),
     "8:11: listeners[0].routes[0].retry.budget: ", "allows no retry at all"),
    ("retry_budget_unlimited",
     config("        retry:\n          budget:\n            ratio: 100%\n"),
     "9:13: listeners[0].routes[0].retry.budget.ratio: ", "as many retries as requests"),
    ("retry_budget_floor_huge",
     config("        retry:\n          budget:\n            min_per_second: 100000\n"),
     "9:13: listeners[0].routes[0].retry.budget.min_per_second: ", "does not limit retries"),
    ("attempts_exceed_route_timeout",
     config("        timeout: 1s\n        retry:\n          attempts: 3\n"
            "          per_try_timeout: 500ms\n"),
     "10:11: listeners[0].routes[0].retry.per_try_timeout: ", "= 1500ms is longer than the route timeout (1s)"),
    ("methods_all_retried_on_timeout",
     config("        retry:\n          methods: all\n          on: [timeout]\n"
            "          per_try_timeout: 1s\n"),
     "8:11: listeners[0].routes[0].retry.methods: ", "may execute twice"),
    ("breaker_min_requests_unreachable",
     config("        rate_limit: { rate: 1/s, key: route }\n",
            "    circuit_breaker:\n      min_requests: 20\n"),
     "12:7: upstreams[0].circuit_breaker.min_requests: ", "never reached within window (10s)"),
    ("burst_below_rate",
     config("        rate_limit:\n          rate: 10/s\n          burst: 5\n"),
     "9:11: listeners[0].routes[0].rate_limit.burst: ", "less than one second of rate (10/s)"),
    ("health_interval_above_open_for",
     config("", "    circuit_breaker: { open_for: 30s }\n    health_check:\n      interval: 1m\n"),
     "12:7: upstreams[0].health_check.interval: ", "longer than circuit_breaker.open_for (30s)"),
    ("queue_timeout_above_route_timeout",
     config("        timeout: 1s\n", "    load_shedding:\n      queue: { timeout: 2s }\n"),
     "12:16: upstreams[0].load_shedding.queue.timeout: ", "longer than the timeout (1s) of route 'api'"),
]


def check(text):
    d = tempfile.mkdtemp(prefix="bulwark-check-")
    try:
        path = os.path.join(d, "bulwark.yaml")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([BULWARK, "--check", "-c", path], capture_output=True, text=True, timeout=20)
        return path, p.returncode, p.stdout, p.stderr
    finally:
        shutil.rmtree(d, True)


class CheckWarnings(unittest.TestCase):
    def test_each_risky_policy_is_warned_about_at_its_key(self):
        for name, text, where, reason in CASES:
            with self.subTest(name):
                path, code, out, err = check(text)
                self.assertEqual(code, 0, err)
                self.assertEqual(out, "%s: ok\n" % path)
                lines = err.splitlines()
                self.assertEqual(len(lines), 1, err)
                self.assertTrue(lines[0].startswith("warning: %s:%s" % (path, where)), err)
                self.assertIn(reason, lines[0])

    def test_a_clean_config_prints_no_warning(self):
        text = config("        timeout: 10s\n"
                      "        rate_limit: { rate: 100/s, burst: 200 }\n"
                      "        retry: { attempts: 3, per_try_timeout: 2s, on: [reset, timeout] }\n",
                      "    circuit_breaker: { open_for: 30s }\n"
                      "    health_check: { interval: 5s }\n"
                      "    load_shedding: { queue: { timeout: 100ms } }\n")
        path, code, out, err = check(text)
        self.assertEqual((code, out, err), (0, "%s: ok\n" % path, ""))

    def test_shipped_configs_have_no_warning(self):
        config_dir = os.environ.get("BULWARK_CONFIG_DIR", os.path.join(os.path.dirname(__file__), "../../config"))
        for name in sorted(os.listdir(config_dir)):
            if name.endswith(".yaml"):
                with self.subTest(name):
                    p = subprocess.run([BULWARK, "--check", "-c", os.path.join(config_dir, name)],
                                       capture_output=True, text=True, timeout=20)
                    self.assertEqual((p.returncode, p.stderr), (0, ""))

    def test_several_warnings_one_line_each(self):
        text = config("        timeout: 1s\n"
                      "        rate_limit: { rate: 10/s, burst: 5 }\n",
                      "    load_shedding: { queue: { timeout: 2s } }\n")
        path, code, out, err = check(text)
        self.assertEqual(code, 0, err)
        lines = err.splitlines()
        self.assertEqual(len(lines), 2, err)
        self.assertTrue(lines[0].startswith("warning: %s:8:35: listeners[0].routes[0].rate_limit.burst: " % path), err)
        self.assertTrue(lines[1].startswith("warning: %s:12:31: upstreams[0].load_shedding.queue.timeout: " % path), err)

    def test_an_invalid_file_gives_errors_and_no_warning(self):
        text = config("        rate_limit: { rate: 10/s, burst: 5 }\n        retries: 3\n")
        _, code, out, err = check(text)
        self.assertEqual(code, 1)
        self.assertEqual(out, "")
        self.assertNotIn("warning:", err)
        self.assertIn("retries: unknown key", err)

    def test_warnings_are_logged_at_start_and_on_reload(self):
        start = ("admin: {{ listen: 127.0.0.1:{admin} }}\n"
                 "access_log: {{ path: {log} }}\n"
                 "listeners:\n"
                 "  - name: in\n"
                 "    listen: 127.0.0.1:{port}\n"
                 "    routes:\n"
                 "      - name: api\n"
                 "        upstream: app\n"
                 "        rate_limit: {{ rate: 10/s, burst: {burst} }}\n"
                 "upstreams:\n"
                 "  - name: app\n"
                 "    endpoints: [127.0.0.1:9]\n")
        proxy = Bulwark(start, burst=5)
        self.addCleanup(proxy.stop)
        where = "%s:9:35: listeners[0].routes[0].rate_limit.burst: burst (%d)"
        wait_for(lambda: ("config warning: " + where % (proxy.config_path, 5)) in proxy.stderr_text(),
                 what="the warning logged at start")
        with open(proxy.config_path, "w") as f:
            f.write(proxy.render(start, burst=3))
        wait_for(lambda: "config reloaded" in proxy.stderr_text(), timeout=10, what="the reload")
        wait_for(lambda: ("config warning: " + where % (proxy.config_path, 3)) in proxy.stderr_text(),
                 what="the warning logged on reload")
        lines = [l for l in proxy.stderr_text().splitlines() if "config warning: " in l]
        self.assertEqual(len(lines), 2, proxy.stderr_text())


if __name__ == "__main__":
    unittest.main()
