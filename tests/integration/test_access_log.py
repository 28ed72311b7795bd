"""The access log never stalls proxying: a reader that does not keep up costs dropped lines
(counted), never blocked requests; lines are whole, never interleaved; SIGUSR1 reopens a
file log after logrotate has renamed it."""
import json
import os
import signal
import subprocess
import threading
import time
import unittest

from harness import Bulwark, MINIMAL, Reader, Testd, connect, request, wait_for

STDOUT_LOG = MINIMAL.replace("access_log: {{ path: {log} }}",
                             "workers: {workers}\naccess_log: {{ path: stdout }}")
FILE_LOG = MINIMAL.replace("access_log:", "workers: 4\naccess_log:")


def text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def keep_alive_requests(port, paths, timeout=10):
    """Sends GET `path` for each path on one connection; returns the statuses."""
    s = connect(port, timeout=timeout)
    r = Reader(s)
    statuses = []
    try:
        for path in paths:
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
            statuses.append(r.read_response()[0])
    finally:
        s.close()
    return statuses


class AccessLog(unittest.TestCase):
    def setUp(self):
        self.backend = Testd()
        self.proxy = None

    def tearDown(self):
        code = self.proxy.stop() if self.proxy else 0
        self.backend.stop()
        self.assertEqual(code, 0, self.proxy.stderr_text() if self.proxy else "")

    def test_unread_stdout_does_not_stall_proxying(self):
        # Regression: write(2) on the worker thread blocked once the pipe was full, and every
        # request on that worker waited for a reader that never came.
        self.proxy = Bulwark(STDOUT_LOG, upstream=self.backend.address, workers=2,
                             popen={"stdout": subprocess.PIPE})  # never read
        long_path = "/" + "p" * 2000
        start = time.time()
        results = []

        def client():
            results.append(keep_alive_requests(self.proxy.port, [long_path] * 750, timeout=5))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(sorted(len(r) for r in results), [750] * 4, self.proxy.stderr_text())
        self.assertTrue(all(status == 200 for r in results for status in r))
        # ~7 MB of log lines against a 64 KiB pipe and a 4 MiB backlog: some were dropped,
        # whole, and counted.
        dropped = self.proxy.metric("bulwark_access_log_dropped_total")
        self.assertGreater(dropped, 0)
        self.assertLess(dropped, 3000)
        self.assertLess(time.time() - start, 45)
        # Shutdown does not wait for the reader either.
        stop_start = time.time()
        self.assertEqual(self.proxy.stop(), 0, self.proxy.stderr_text())
        self.assertLess(time.time() - stop_start, 5)
        self.proxy.proc.stdout.close()
        self.proxy = None

    def test_lines_are_whole_with_several_workers(self):
        # Lines longer than PIPE_BUF (4 KiB) from four workers into one pipe.
        self.proxy = Bulwark(STDOUT_LOG, upstream=self.backend.address, workers=4,
                             popen={"stdout": subprocess.PIPE})
        chunks = []
        reader = threading.Thread(target=lambda: chunks.append(self.proxy.proc.stdout.read()))
        reader.start()
        paths = ["/" + "w%d" % i * 1500 for i in range(4)]  # 6 KiB lines
        threads = [threading.Thread(target=keep_alive_requests, args=(self.proxy.port, [p] * 100))
                   for p in paths]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(self.proxy.stop(), 0, self.proxy.stderr_text())
        reader.join(10)
        self.proxy.proc.stdout.close()
        self.proxy = None
        lines = b"".join(chunks).decode().splitlines()
        self.assertEqual(len(lines), 400)
        for line in lines:
            entry = json.loads(line)  # an interleaved line would not parse
            self.assertIn(entry["path"], paths)

    def test_sigusr1_reopens_a_file_log(self):
        # Regression: SIGUSR1 killed the process (no handler: the default action).
        self.proxy = Bulwark(FILE_LOG, upstream=self.backend.address)
        log = self.proxy.log_path
        self.assertEqual(request(self.proxy.port, "GET", "/a", headers={"X-Request-Id": "before"})[0], 200)
        wait_for(lambda: "before" in text(log), what="the first line")
        os.rename(log, log + ".1")  # what logrotate does
        self.proxy.signal(signal.SIGUSR1)
        wait_for(lambda: os.path.exists(log), what="the log reopened at its path")
        self.assertIsNone(self.proxy.proc.poll())
        self.assertEqual(request(self.proxy.port, "GET", "/b", headers={"X-Request-Id": "after"})[0], 200)
        wait_for(lambda: "after" in text(log), what="the new line in the new file")
        with open(log + ".1") as f:
            rotated = [json.loads(line)["request_id"] for line in f]
        self.assertEqual(rotated, ["before"])
        self.assertIn("access log reopened", self.proxy.stderr_text())
        self.assertEqual(self.proxy.stop(), 0)
        self.proxy = None


if __name__ == "__main__":
    unittest.main()
