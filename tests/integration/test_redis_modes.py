"""Global rate limits on Redis Cluster and Sentinel, with AUTH and host names, against real
redis-server processes started here (redis_topology.py): two Bulwark processes share one
quota across a 3-master cluster, buckets land on the master owning their slot, a slot moved
(ASK during the move, MOVED after) loses no decision, a sentinel failover is followed with
requests decided locally meanwhile, a wrong password is logged and counted."""
import json
import os
import re
import time
import unittest

import subprocess

from harness import SANITIZED, Bulwark, Testd, free_port, request, wait_for
from redis_topology import Cluster, RespClient, Sentinel, key_slot, redis_available

ROUTE = """
listeners:
  - name: inbound
    listen: 127.0.0.1:{{port}}
    routes:
      - name: global
        match: {{{{ prefix: / }}}}
        upstream: app
        rate_limit: {{{{ rate: {rate}, burst: {burst}, key: "header:x-key", scope: global, on_redis_failure: {fallback} }}}}
upstreams:
  - name: app
    endpoints: [{{upstream}}]
"""


def template(redis_block, rate="1/s", burst=5, fallback="deny"):
    head = "admin: {{ listen: 127.0.0.1:{admin} }}\naccess_log: {{ path: \"off\" }}\n"
    return head + redis_block.replace("{", "{{").replace("}", "}}") + "\n" + \
        ROUTE.format(rate=rate, burst=burst, fallback=fallback)


# Generous limits use rate 2/s with a burst of 1000, not 1000/s: a bucket's key expires once
# the bucket would be full again, 2 ms after a request at 1000/s -- too soon for a test to
# find it in Redis -- and 500 ms per request at 2/s.


def get(port, key):
    status, headers, body = request(port, "GET", "/r", headers={"x-key": key}, timeout=5)
    return status, headers, body


OUTAGE = b"Redis is unavailable"


@unittest.skipUnless(redis_available(), "redis-server is not installed (Debian package redis-server)")
class ClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(masters=3)
        cls.backend = Testd()

    @classmethod
    def tearDownClass(cls):
        cls.backend.stop()
        cls.cluster.stop()

    def setUp(self):
        self.cluster.flushall()
        self.proxies = []

    def tearDown(self):
        for p in self.proxies:
            p.stop()

    def proxy(self, seeds, **kw):
        block = "redis: { mode: cluster, nodes: [%s], timeout: %s }" % (
            ", ".join(seeds), "200ms" if SANITIZED else "50ms")
        p = Bulwark(template(block, **kw), upstream=self.backend.address)
        self.proxies.append(p)
        wait_for(lambda: "slot map read" in p.stderr_text(), timeout=10, what="the slot map")
        return p

    def bucket_keys(self):
        return {port: self.cluster.keys_on(port, "bulwark:rl:*") for port in self.cluster.ports}

    def test_two_proxies_share_quotas_on_the_slot_owners(self):
        # One seed only: the other masters are found through CLUSTER SLOTS.
        a = self.proxy([self.cluster.addresses[0]])
        b = self.proxy([self.cluster.addresses[1]])
        keys = ["tenant-%d" % i for i in range(12)]
        allowed = {k: 0 for k in keys}
        for k in keys:
            for i in range(10):  # burst 5, 1/s: about 5 of 10 pass, whichever proxy asks
                status, _, body = get((a if i % 2 else b).port, k)
                self.assertNotIn(OUTAGE, body)
                if status == 200:
                    allowed[k] += 1
        for k, n in allowed.items():
            self.assertIn(n, (5, 6), (k, allowed))
        # Each bucket is on the master that owns its slot, and the masters all got some.
        placed = self.bucket_keys()
        self.assertEqual(sum(len(v) for v in placed.values()), len(keys))
        for port, names in placed.items():
            for name in names:
                self.assertEqual(self.cluster.node_for_key(name), port, name)
                self.assertEqual(key_slot(name), self.cluster.slot_for_key(name))
        self.assertGreaterEqual(sum(1 for v in placed.values() if v), 2, placed)
        self.assertEqual(a.metric("bulwark_redis_errors_total"), 0)
        # Per server: every master up in every worker, latencies counted where buckets live.
        for port in self.cluster.ports:
            node = "127.0.0.1:%d" % port
            self.assertEqual(a.metric("bulwark_redis_node_up", node=node), 1, node)
            self.assertEqual(a.metric("bulwark_redis_node_errors_total", node=node), 0, node)
        answered = sum(a.metric("bulwark_redis_request_duration_seconds_count", node="127.0.0.1:%d" % port) or 0
                       for port in self.cluster.ports)
        self.assertEqual(answered, len(keys) * 5)  # a answered every other request
        wait_for(lambda: a.metric("bulwark_redis_replicas") == 2, timeout=5, what="two replicas learned")
        status = json.loads(request(a.admin_port, "GET", "/status")[2])
        self.assertEqual(status["redis"]["mode"], "cluster")
        self.assertEqual(status["redis"]["replicas"], 2)
        self.assertEqual(sorted(n["address"] for n in status["redis"]["nodes"]),
                         sorted(self.cluster.addresses))
        self.assertTrue(all(n["up_workers"] == 1 and n["role"] == "data" for n in status["redis"]["nodes"]))

    def test_a_slot_moved_loses_no_decision(self):
        p = self.proxy([self.cluster.addresses[0]], rate="2/s", burst=1000)
        key = "mover"
        name = "bulwark:rl:global:" + key
        for _ in range(20):
            self.assertEqual(get(p.port, key)[0], 200)
        slot = self.cluster.slot_for_key(name)
        old = self.cluster.node_for_key(name)
        new = next(port for port in self.cluster.ports if port != old)
        # Mid-move, the keys still on the old owner: it answers; then the keys migrated: ASK.
        self.cluster.begin_move(slot, new)
        for _ in range(20):
            self.assertEqual(get(p.port, key)[0], 200)
        self.cluster.migrate_keys(slot)
        for _ in range(20):
            status, _, body = get(p.port, key)
            self.assertEqual(status, 200, body)
        self.assertEqual(self.cluster.keys_on(new, name), [name])
        # Done: the old owner answers MOVED, and Bulwark goes to the new one from then on.
        self.cluster.finish_move(slot, new)
        for _ in range(40):
            status, _, body = get(p.port, key)
            self.assertEqual(status, 200, body)  # on_redis_failure: deny would answer 429
        self.assertEqual(self.cluster.keys_on(new, name), [name])
        self.assertEqual(self.cluster.keys_on(old, name), [])
        self.assertEqual(p.metric("bulwark_redis_errors_total"), 0)
        self.assertEqual(self.cluster.owner(slot), new)


@unittest.skipUnless(redis_available(), "redis-server is not installed (Debian package redis-server)")
class SentinelTest(unittest.TestCase):
    def test_failover_is_followed(self):
        s = Sentinel(replicas=1, sentinels=3, down_after_ms=1000, failover_timeout_ms=3000)
        backend = Testd()
        try:
            block = "redis: { mode: sentinel, sentinels: [%s], master_name: mymaster, timeout: 50ms }" % (
                ", ".join(s.sentinel_addresses))
            p = Bulwark(template(block, rate="2/s", burst=1000, fallback="local"),
                        upstream=backend.address)
            try:
                old = s.initial_master_port
                wait_for(lambda: "master 'mymaster' is 127.0.0.1:%d" % old in p.stderr_text(),
                         timeout=10, what="the master named by the sentinels")
                for i in range(10):
                    self.assertEqual(get(p.port, "k%d" % i)[0], 200)
                self.assertTrue(RespClient(old).call("KEYS", "bulwark:rl:*"))
                s.kill_master()
                # Meanwhile every request is decided locally (on_redis_failure: local): no error.
                t0 = time.time()
                new = None
                while time.time() - t0 < 20:
                    self.assertEqual(get(p.port, "during")[0], 200)
                    m = re.search(r"master 'mymaster' is 127\.0\.0\.1:(\d+) \(was 127\.0\.0\.1:%d\)" % old,
                                  p.stderr_text())
                    if m:
                        new = int(m.group(1))
                        break
                    time.sleep(0.05)
                self.assertIsNotNone(new, p.stderr_text())
                self.assertEqual(new, s.master_port())
                followed = time.time() - t0
                # The sentinels take down_after (1 s) plus an election; Bulwark asks every second.
                self.assertLess(followed, 15)

                def on_new_master():
                    get(p.port, "after")
                    return RespClient(new).call("EXISTS", "bulwark:rl:global:after") == 1
                wait_for(on_new_master, timeout=5, what="decisions on the new master")
                print("failover followed in %.1f s" % followed)
            finally:
                p.stop()
        finally:
            backend.stop()
            s.stop()


@unittest.skipUnless(redis_available(), "redis-server is not installed (Debian package redis-server)")
class AuthAndNamesTest(unittest.TestCase):
    def setUp(self):
        self.cluster = None
        self.backend = Testd()

    def tearDown(self):
        self.backend.stop()

    def test_password_from_a_file_and_names_resolved(self):
        port = free_port()
        server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--requirepass", "s3cret-pw"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: self.answers(port), timeout=5, what="redis-server")
            pw = os.path.join(os.environ.get("TMPDIR", "/tmp"), "bulwark-redis-pw-%d" % os.getpid())
            with open(pw, "w") as f:
                f.write("s3cret-pw\n")
            try:
                block = "redis: { address: localhost:%d, password_file: %s, timeout: 100ms }" % (port, pw)
                p = Bulwark(template(block, rate="2/s", burst=1000), upstream=self.backend.address)
                try:
                    wait_for(lambda: "connected" in p.stderr_text(), timeout=5, what="a connection")
                    for _ in range(5):
                        status, _, body = get(p.port, "auth")
                        self.assertEqual(status, 200, body)
                    self.assertEqual(RespClient(port, password="s3cret-pw").call(
                        "EXISTS", "bulwark:rl:global:auth"), 1)
                    # /config shows where the password comes from, never the password.
                    _, _, config = request(p.admin_port, "GET", "/config")
                    self.assertIn(b"from file " + pw.encode(), config)
                    self.assertNotIn(b"s3cret-pw", config)
                finally:
                    p.stop()
                # A wrong password (from the environment): a clear log line and the counter.
                os.environ["BULWARK_TEST_REDIS_PW"] = "wrong"
                block = "redis: { address: 127.0.0.1:%d, password_env: BULWARK_TEST_REDIS_PW }" % port
                p = Bulwark(template(block, rate="2/s", burst=1000), upstream=self.backend.address)
                try:
                    wait_for(lambda: "AUTH refused" in p.stderr_text(), timeout=5, what="the AUTH log line")
                    self.assertRegex(p.stderr_text(), r"redis 127\.0\.0\.1:\d+ unreachable at start: AUTH refused: "
                                                      r"WRONGPASS")
                    status, _, body = get(p.port, "x")
                    self.assertEqual(status, 429)  # on_redis_failure: deny
                    self.assertIn(OUTAGE, body)
                    self.assertGreater(p.metric("bulwark_redis_errors_total"), 0)
                finally:
                    p.stop()
                    del os.environ["BULWARK_TEST_REDIS_PW"]
            finally:
                os.unlink(pw)
        finally:
            server.kill()
            server.wait()

    @staticmethod
    def answers(port):
        try:
            return RespClient(port, password="s3cret-pw").call("PING") == "PONG"
        except (OSError, Exception):
            return False

    def test_config_errors(self):
        from harness import BULWARK
        import subprocess
        import tempfile
        cases = [
            ("redis: { mode: cluster, address: 127.0.0.1:1 }", ["redis.nodes: required key is missing", "list the addresses under nodes"]),
            ("redis: { mode: sentinel, sentinels: [127.0.0.1:1] }", ["redis.master_name: required key is missing"]),
            ("redis: { mode: ring, address: 127.0.0.1:1 }", ["redis.mode: must be standalone, sentinel or cluster"]),
            ("redis: { address: 127.0.0.1:1, password_file: /nonexistent/pw }", ["cannot read /nonexistent/pw"]),
            ("redis: { address: 127.0.0.1:1, password_env: BULWARK_NO_SUCH_VAR }", ["BULWARK_NO_SUCH_VAR is not set"]),
            ("redis: { address: 127.0.0.1:1, username: u }", ["redis.username: needs password_file or password_env"]),
            ("redis: { mode: cluster, nodes: [nohost] }", ["redis.nodes: 'nohost'"]),
        ]
        for block, expected in cases:
            text = template(block).format(port=1, admin=2, upstream="127.0.0.1:3")
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                f.write(text)
            try:
                r = subprocess.run([BULWARK, "--check", "-c", f.name], capture_output=True, text=True, timeout=10)
                self.assertNotEqual(r.returncode, 0, block)
                for e in expected:
                    self.assertIn(e, r.stderr + r.stdout, block)
                self.assertRegex(r.stderr + r.stdout, re.escape(f.name) + r":3:\d+: redis", block)
            finally:
                os.unlink(f.name)


if __name__ == "__main__":
    unittest.main()
