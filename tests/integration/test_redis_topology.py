"""The redis_topology helper itself: a 3-master cluster with its slots spread, a slot resharded
(MOVED after, ASK during), a password-protected cluster, and Sentinel failovers (with and
without a password) after the master is SIGKILLed. About 15 s."""
import os
import time
import unittest

from harness import SANITIZED

from redis_topology import (Cluster, RespClient, RespError, Sentinel, key_for_slot, key_slot,
                            redis_available)

SKIP = "redis-server is not installed (Debian package redis-server)"
# These tests run no Bulwark binary: the sanitizer pass would only repeat them.
SANITIZED_SKIP = "runs no Bulwark binary: checked in the unsanitized pass"


@unittest.skipUnless(redis_available(), SKIP)
@unittest.skipIf(SANITIZED, SANITIZED_SKIP)
class ClusterTopology(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(masters=3)
        cls.addClassCleanup(cls.cluster.stop)

    def other_port(self, port):
        return next(p for p in self.cluster.ports if p != port)

    def test_three_masters_share_the_slots(self):
        c = self.cluster
        self.assertEqual(len(c.ports), 3)
        self.assertEqual(c.addresses, ["127.0.0.1:%d" % p for p in c.ports])
        owners = {p for _, _, p in c.slot_map()}
        self.assertEqual(owners, set(c.ports))
        self.assertEqual(sum(b - a + 1 for a, b, _ in c.slot_map()), 16384)
        for p in c.ports:
            self.assertEqual(c.call(p, "ROLE")[0], "master")
            self.assertEqual(c.slot_map(p), c.slot_map())
        for key in ("foo", "bulwark:rl:{route}:x", "{}", "a{b}c", "\u00e9t\u00e9"):
            self.assertEqual(key_slot(key), c.slot_for_key(key), key)

    def test_keys_in_different_slots_land_on_different_nodes(self):
        c = self.cluster
        keys = [key_for_slot(slot, "spread") for slot in (100, 8000, 16000)]
        for k in keys:
            self.assertEqual(c.set(k, "v-" + k), "OK")
        owners = [c.node_for_key(k) for k in keys]
        self.assertEqual(len(set(owners)), 3, owners)
        for k, p in zip(keys, owners):
            self.assertIn(k, c.keys_on(p))
            self.assertEqual(c.call(p, "GET", k), "v-" + k)
            self.assertEqual(c.get(k), "v-" + k)
            other = self.other_port(p)
            err = c.call(other, "GET", k, raise_errors=False)
            self.assertIsInstance(err, RespError)
            self.assertEqual((err.code, err.port), ("MOVED", p))

    def test_move_slot_moves_keys_and_answers_moved(self):
        c = self.cluster
        slot = 4242
        keys = [key_for_slot(slot, "move%d-" % i) for i in range(5)]
        for k in keys:
            c.set(k, "x" + k)
        old = c.owner(slot)
        new = self.other_port(old)
        c.move_slot(slot, new)
        self.assertEqual(c.node_for_key(keys[0]), new)
        for p in c.ports:
            self.assertEqual(c.owner(slot, p), new)
        err = c.call(old, "GET", keys[0], raise_errors=False)
        self.assertEqual((err.code, err.slot, err.host, err.port),
                         ("MOVED", slot, "127.0.0.1", new))
        with self.assertRaises(RespError):
            c.call(old, "GET", keys[0])
        for k in keys:
            self.assertEqual(c.call(new, "GET", k), "x" + k)
            self.assertNotIn(k, c.keys_on(old))
        self.assertEqual(c.get(keys[1]), "x" + keys[1])

    def test_begin_move_answers_ask(self):
        c = self.cluster
        slot = 12000
        key = key_for_slot(slot, "ask")
        absent = key_for_slot(slot, "absent")
        c.set(key, "here")
        old = c.owner(slot)
        new = self.other_port(old)
        self.assertEqual(c.begin_move(slot, new), old)
        # Keys not moved yet: the owner serves what it holds and redirects the rest with ASK.
        self.assertEqual(c.call(old, "GET", key), "here")
        err = c.call(old, "GET", absent, raise_errors=False)
        self.assertEqual((err.code, err.slot, err.port), ("ASK", slot, new))
        self.assertEqual(c.migrate_keys(slot), 1)
        err = c.call(old, "GET", key, raise_errors=False)
        self.assertEqual((err.code, err.port), ("ASK", new))
        err = c.call(new, "GET", key, raise_errors=False)
        self.assertEqual((err.code, err.port), ("MOVED", old))
        with c.client(new) as client:
            self.assertEqual(client.pipeline([("ASKING",), ("GET", key)]), ["OK", "here"])
        self.assertEqual(c.get(key), "here")  # follows ASK
        c.finish_move(slot, new)
        err = c.call(old, "GET", key, raise_errors=False)
        self.assertEqual((err.code, err.port), ("MOVED", new))
        self.assertEqual(c.call(new, "GET", key), "here")


@unittest.skipUnless(redis_available(), SKIP)
@unittest.skipIf(SANITIZED, SANITIZED_SKIP)
class ClusterWithPassword(unittest.TestCase):
    def test_password_and_cleanup(self):
        c = Cluster(masters=3, password="s3cret")
        self.addCleanup(c.stop)
        with self.assertRaises(RespError) as cm:
            with RespClient(c.ports[0]) as client:
                client.call("GET", "x")
        self.assertEqual(cm.exception.code, "NOAUTH")
        slot = key_slot("pw-key")
        c.set("pw-key", "v")
        new = next(p for p in c.ports if p != c.owner(slot))
        c.move_slot(slot, new)  # MIGRATE ... AUTH
        with RespClient(new, password="s3cret") as client:
            self.assertEqual(client.call("GET", "pw-key"), "v")
        procs = [n.proc for n in c.nodes]
        c.stop()
        self.assertFalse(os.path.exists(c.root))
        self.assertTrue(all(p.poll() is not None for p in procs))


class _SentinelFailover:
    password = None

    def test_failover_after_master_killed(self):
        s = Sentinel(replicas=1, sentinels=3, password=self.password)
        self.addCleanup(s.stop)
        self.assertEqual(len(s.sentinel_addresses), 3)
        old = s.master_port()
        self.assertEqual(old, s.initial_master_port)
        self.assertEqual(set(s.master_ports_seen().values()), {old})
        self.assertEqual(s.call(old, "SET", "before", "1"), "OK")
        replica = next(p for p in s.server_ports if p != old)
        deadline = time.monotonic() + 10
        while s.call(replica, "GET", "before") != "1" and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(s.call(replica, "GET", "before"), "1")

        self.assertEqual(s.kill_master(), old)
        start = time.monotonic()
        # Typically ~2.5 s; a split sentinel vote is retried after 2 x failover-timeout.
        new = s.wait_failover(timeout=12)
        self.assertLess(time.monotonic() - start, 12)
        self.assertNotEqual(new, old)
        self.assertEqual(new, replica)
        self.assertEqual(set(s.master_ports_seen().values()), {new})
        self.assertEqual(s.role(new), "master")
        self.assertEqual(s.call(new, "SET", "after", "2"), "OK")
        self.assertEqual(s.call(new, "GET", "before"), "1")
        if self.password is not None:
            with RespClient(new) as client:
                self.assertEqual(client.call("SET", "x", "y", raise_errors=False).code, "NOAUTH")


@unittest.skipUnless(redis_available(), SKIP)
@unittest.skipIf(SANITIZED, SANITIZED_SKIP)
class SentinelFailover(_SentinelFailover, unittest.TestCase):
    pass


@unittest.skipUnless(redis_available(), SKIP)
@unittest.skipIf(SANITIZED, SANITIZED_SKIP)
class SentinelFailoverWithPassword(_SentinelFailover, unittest.TestCase):
    password = "s3cret"


if __name__ == "__main__":
    unittest.main()
