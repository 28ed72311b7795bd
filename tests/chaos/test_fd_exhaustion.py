"""Descriptor exhaustion in waves (tests/integration/test_fd_limit.py checks the single
refusal, its metrics and the breaker; this checks many clients at once, repeatedly):
RLIMIT_NOFILE lowered, then far more connections than descriptors, a wave at a time. Every
client gets its 200 or 503 overloaded (Retry-After: 1) — never a hang or a silent drop —
Bulwark stays up, and after each wave it serves again and its descriptors come back to the
baseline (no leak from one wave to the next)."""
import json
import resource
import time

from chaos import (Baseline, Bulwark, ChaosTest, Reader, Testd, check_answer, connect,
                   fd_count, request, rst_close, run_clients, wait_for)

LIMIT = 64

TEMPLATE = """
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - {{ name: all, match: {{ prefix: / }}, upstream: app, timeout: {timeout} }}
upstreams:
  - name: app
    endpoints: [{upstream}]
    pool: {{ max_idle: 2 }}
"""


def low_fd_limit():
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


class FdExhaustion(ChaosTest):
    def test_waves_of_connections_past_the_descriptor_limit(self):
        backend = Testd()
        self.on_teardown(backend.stop)
        self.proxy = Bulwark(TEMPLATE, upstream=backend.address, timeout="30s",
                             popen={"preexec_fn": low_fd_limit})
        self.warm()
        base = Baseline(self.proxy.proc.pid)
        for wave in range(3):
            held = []

            def open_one(i):
                s = connect(self.proxy.port, timeout=10)
                held.append(s)
                s.sendall(b"GET /hold?delay=1500&size=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
                return s

            socks = run_clients(90, open_one, threads=8)
            self.assertEqual([s for s in socks if isinstance(s, Exception)], [])
            peak = fd_count(self.proxy.proc.pid)

            def answer(i):
                s = socks[i]
                status, h, body = Reader(s).read_response()
                return check_answer(self, status, h, body, allowed_reasons=("overloaded",),
                                    what="wave %d" % wave), h

            results = run_clients(len(socks), answer, threads=16)
            errors = [r for r in results if isinstance(r, Exception)]
            self.assertEqual(errors, [], "wave %d" % wave)
            overloaded = [h for reason, h in results if reason == "overloaded"]
            served = [h for reason, h in results if reason is None]
            self.assertGreater(len(overloaded), 0, "wave %d: nothing refused" % wave)
            self.assertGreater(len(served), 0, "wave %d: nothing served" % wave)
            self.assertTrue(all(h.get("retry-after") == "1" for h in overloaded))
            self.assertLessEqual(peak, LIMIT)
            for s in held:
                if wave % 2:
                    rst_close(s)
                else:
                    s.close()
            self.assert_alive()

            def recovered():
                try:
                    return request(self.proxy.port, "GET", "/after", timeout=3)[0] == 200
                except (OSError, EOFError):
                    return False
            wait_for(recovered, timeout=5, interval=0.1, what="served again after wave %d" % wave)
            base.check(self)
        self.assertGreaterEqual(self.proxy.metric("bulwark_accepts_refused_total", reason="fd_limit"), 1)

    def test_config_change_while_out_of_descriptors_is_applied_afterwards(self):
        """The config file is rewritten while Bulwark has no descriptor left: the watcher
        sees the change but cannot open the file (EMFILE). Once descriptors are back the
        change must still be applied (the file watch is what a Kubernetes ConfigMap update
        relies on; nobody sends a SIGHUP). It failed before the reload retried such reads:
        the read error was recorded as the fingerprint last acted on, counted as a
        refused reload, and the new file never read again until it changed once more; now a
        read that fails for want of descriptors is tried again shortly."""
        backend = Testd()
        self.on_teardown(backend.stop)
        self.proxy = Bulwark(TEMPLATE, upstream=backend.address, timeout="30s",
                             popen={"preexec_fn": low_fd_limit})
        self.warm()
        held = []
        for _ in range(LIMIT + 20):
            s = connect(self.proxy.port)
            s.sendall(b"GET /hold?delay=4000 HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append(s)
        time.sleep(0.3)
        self.assertGreaterEqual(fd_count(self.proxy.proc.pid), LIMIT - 1)
        with open(self.proxy.config_path, "w") as f:
            f.write(self.proxy.render(TEMPLATE, timeout="20s"))
        time.sleep(1.5)  # the watcher's event, its read 200 ms later and the re-read to settle
        self.assert_alive()
        for s in held:
            rst_close(s)

        def reload_state():
            try:
                return json.loads(request(self.proxy.admin_port, "GET", "/status", timeout=3)[2])["reload"]
            except (OSError, EOFError, ValueError):
                return None
        wait_for(lambda: reload_state() is not None, what="the admin endpoint back")
        deadline = time.time() + 6  # the watcher's 1 s backstop has had several turns
        state = reload_state()
        while state["generation"] < 2 and time.time() < deadline:
            time.sleep(0.25)
            state = reload_state() or state
        self.assertEqual(state["generation"], 2,
                         "the config written while out of descriptors was never applied: %r" % state)
        self.assertEqual(request(self.proxy.port, "GET", "/after")[0], 200)


if __name__ == "__main__":
    import unittest
    unittest.main()
