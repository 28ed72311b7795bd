"""Command line: --check reports every config error as FILE:LINE:COL: key.path: message."""
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import BULWARK

CONFIG_DIR = os.environ.get("BULWARK_CONFIG_DIR", os.path.join(os.path.dirname(__file__), "../../config"))


def run(*args):
    p = subprocess.run([BULWARK, *args], capture_output=True, text=True, timeout=20)
    return p.returncode, p.stdout, p.stderr


class Cli(unittest.TestCase):
    def test_version(self):
        code, out, _ = run("--version")
        self.assertEqual(code, 0)
        self.assertRegex(out, r"^bulwark \d+\.\d+\.\d+\n$")

    def test_shipped_configs_are_valid(self):
        for name in sorted(os.listdir(CONFIG_DIR)):
            if name.endswith(".yaml"):
                with self.subTest(name):
                    code, out, err = run("--check", "-c", os.path.join(CONFIG_DIR, name))
                    self.assertEqual(code, 0, err)

    def test_complete_example_in_the_docs_is_valid(self):
        doc = os.path.join(os.path.dirname(__file__), "../../docs/configuration.md")
        with open(doc) as f:
            text = f.read()
        section = text.split("## A complete example", 1)[1]
        block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
        self.assertIn("circuit_breaker:", block)  # the whole example, not a fragment
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(block)
        code, out, err = run("--check", "-c", f.name)
        os.unlink(f.name)
        self.assertEqual(code, 0, err)

    def test_check_lists_every_error(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write("listeners:\n  - name: in\n    listen: nowhere\n    routes:\n"
                    "      - name: r\n        upstream: ghost\n        retries: 3\n"
                    "upstreams:\n  - name: app\n    endpoints: [127.0.0.1:3000]\n"
                    "    connect_timeout: fast\n")
        code, out, err = run("--check", "-c", f.name)
        os.unlink(f.name)
        self.assertEqual(code, 1)
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 4, err)
        for line in lines:
            self.assertRegex(line, r"^%s:\d+:\d+: [a-z_\[\]0-9.]+: .+" % f.name)
        self.assertIn("%s:3:13: listeners[0].listen: expected HOST:PORT" % f.name, err)
        self.assertIn("%s:6:19: listeners[0].routes[0].upstream: no upstream named 'ghost'" % f.name, err)
        self.assertIn("%s:7:9: listeners[0].routes[0].retries: unknown key" % f.name, err)
        self.assertIn("%s:11:22: upstreams[0].connect_timeout: invalid duration 'fast'" % f.name, err)

    def test_run_with_a_bad_config_exits_1(self):
        code, _, err = run("-c", "/nonexistent.yaml")
        self.assertEqual(code, 1)
        self.assertIn("/nonexistent.yaml:0:0: (root): cannot open the file: "
                      "No such file or directory (ENOENT)", err)

    def test_unreadable_files_say_why(self):
        # Regression: a directory, an empty file or an unreadable one said only FILE:0:0.
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d, True)
        empty = os.path.join(d, "empty.yaml")
        open(empty, "w").close()
        secret = os.path.join(d, "secret.yaml")
        with open(secret, "w") as f:
            f.write("workers: 1\n")
        os.chmod(secret, 0)
        cases = [(d, "cannot read the file: Is a directory (EISDIR)"),
                 (empty, "the file is empty"),
                 (os.path.join(empty, "x.yaml"), "cannot open the file: Not a directory (ENOTDIR)")]
        for path, reason in cases:
            with self.subTest(path):
                code, _, err = run("--check", "-c", path)
                self.assertEqual(code, 1)
                self.assertIn("%s:0:0: (root): %s" % (path, reason), err)
        # EACCES: root reads anything, so run as nobody when root (skipped if nobody cannot
        # reach the binary).
        preexec = None
        if os.geteuid() == 0:
            os.chmod(d, 0o755)
            preexec = lambda: os.setuid(65534)  # noqa: E731
        try:
            p = subprocess.run([BULWARK, "--check", "-c", secret], capture_output=True, text=True,
                               timeout=20, preexec_fn=preexec)
        except PermissionError:
            self.skipTest("the binary is not reachable as nobody")
        self.assertEqual(p.returncode, 1)
        self.assertIn("%s:0:0: (root): cannot open the file: Permission denied (EACCES)" % secret,
                      p.stderr)

    def test_durations_are_capped(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write("drain: { timeout: 5124095576h }\n"
                    "listeners:\n  - name: in\n    listen: 127.0.0.1:8080\n"
                    "    routes: [{ name: r, upstream: app }]\n"
                    "upstreams:\n  - name: app\n    endpoints: [127.0.0.1:3000]\n")
        code, _, err = run("--check", "-c", f.name)
        os.unlink(f.name)
        self.assertEqual(code, 1)
        self.assertIn("%s:1:19: drain.timeout: duration '5124095576h' is above the maximum of 24h"
                      % f.name, err)

    def test_unknown_flag(self):
        self.assertEqual(run("--frobnicate")[0], 2)


if __name__ == "__main__":
    unittest.main()
