"""Real Redis topologies for integration tests, on loopback and ephemeral ports.

    Cluster(masters=3, password=None, username=None, node_timeout_ms=2000)
    Sentinel(replicas=1, sentinels=3, master_name="mymaster", down_after_ms=1000,
             failover_timeout_ms=3000, password=None, username=None, sentinel_password=None)
    RespClient(port).call("CLUSTER", "INFO")

Only redis-server (also run as `redis-server CONF --sentinel`: Debian ships no separate
redis-sentinel binary unless the redis-sentinel package is installed) and the standard library.
Every process gets its own directory under one temporary directory (its log is `redis.log`
there); `stop()` kills them all and removes the directory, and an atexit hook does the same for
whatever a failed test left behind. Children also get PR_SET_PDEATHSIG=SIGKILL, so a test
runner killed outright does not leave redis-servers behind. Start topologies from a thread that
lives as long as they should (the main thread, setUp/setUpClass): the signal fires when the
*thread* that spawned the child exits.

Ports come from harness.free_port(); another process may still take a port between the check
and redis-server's bind, so each server is verified by its INFO process_id and restarted on new
ports when it could not bind. The cluster bus uses its own free port (--cluster-port), never
port+10000 (which may not exist above 55535).
"""
import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from harness import free_port

REDIS_SERVER = os.environ.get("BULWARK_REDIS_SERVER", "redis-server")
HOST = "127.0.0.1"
SLOTS = 16384


def redis_available():
    """True when redis-server is installed (for unittest.skipUnless)."""
    return shutil.which(REDIS_SERVER) is not None


def redis_version():
    """The installed redis-server version as a tuple, e.g. (7, 0, 15); None when absent."""
    if not redis_available():
        return None
    out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout
    for word in out.split():
        if word.startswith("v="):
            return tuple(int(x) for x in word[2:].split(".") if x.isdigit())
    return None


# ---------------------------------------------------------------------------------------------
# RESP client


class RespError(Exception):
    """An error reply. `code` is its first word (ERR, MOVED, ASK, NOAUTH, WRONGPASS, ...);
    for MOVED/ASK, `slot`, `host` and `port` are filled in."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message
        parts = message.split()
        self.code = parts[0] if parts else ""
        self.slot = self.host = self.port = None
        if self.code in ("MOVED", "ASK") and len(parts) >= 3:
            self.slot = int(parts[1])
            host, _, port = parts[2].rpartition(":")
            self.host, self.port = host, int(port)

    def __eq__(self, other):
        return isinstance(other, RespError) and other.message == self.message

    def __hash__(self):
        return hash(self.message)

    def __repr__(self):
        return "RespError(%r)" % self.message


class RespClient:
    """A tiny blocking RESP2 (and RESP3-reply-capable) client on one connection.

    call(*args) sends one command and returns its reply: simple strings and bulk strings as
    str (bytes when not UTF-8, or always bytes with decode=False), integers as int, nil as None,
    arrays as lists; an error reply raises RespError, or is returned as a RespError value with
    call(..., raise_errors=False). AUTHs itself when password (and username) are given."""

    def __init__(self, port, host=HOST, password=None, username=None, timeout=5.0, decode=True):
        self.port, self.host, self.decode = port, host, decode
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        if password is not None:
            if username is not None:
                self.call("AUTH", username, password)
            else:
                self.call("AUTH", password)

    def close(self):
        try:
            self.file.close()
        finally:
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, bytes):
                b = a
            elif isinstance(a, str):
                b = a.encode()
            elif isinstance(a, (int, float)):
                b = str(a).encode()
            else:
                raise TypeError("cannot send %r" % (a,))
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def send(self, *args):
        self.sock.sendall(self.encode(args))

    def call(self, *args, raise_errors=True):
        self.send(*args)
        return self.read_reply(raise_errors=raise_errors)

    def pipeline(self, commands, raise_errors=True):
        """Sends every command (a list of argument tuples) at once; returns the replies (errors
        as RespError values); raises the first error when raise_errors."""
        self.sock.sendall(b"".join(self.encode(tuple(c)) for c in commands))
        replies = [self.read_reply(raise_errors=False) for _ in commands]
        if raise_errors:
            for r in replies:
                if isinstance(r, RespError):
                    raise r
        return replies

    def _line(self):
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection to %s:%d closed" % (self.host, self.port))
        return line[:-2]

    def _text(self, b):
        if not self.decode:
            return b
        try:
            return b.decode()
        except UnicodeDecodeError:
            return b

    def _exact(self, n):
        data = self.file.read(n + 2)
        if len(data) != n + 2:
            raise ConnectionError("connection to %s:%d closed" % (self.host, self.port))
        return data[:-2]

    def read_reply(self, raise_errors=True):
        reply = self._read()
        if raise_errors and isinstance(reply, RespError):
            raise reply
        return reply

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return self._text(rest)
        if kind == b"-":
            return RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._text(self._exact(n))
        if kind in (b"*", b"~", b">"):
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        # RESP3 replies (after HELLO 3)
        if kind == b"_":
            return None
        if kind == b"#":
            return rest == b"t"
        if kind == b",":
            return float(rest)
        if kind == b"(":
            return int(rest)
        if kind == b"%":
            return {self._hashable(self._read()): self._read() for _ in range(int(rest))}
        if kind == b"|":  # attributes: read and drop, then the reply itself
            for _ in range(int(rest) * 2):
                self._read()
            return self._read()
        if kind == b"=":
            return self._text(self._exact(int(rest))[4:])
        if kind == b"!":
            return RespError(self._exact(int(rest)).decode(errors="replace"))
        raise ConnectionError("bad RESP type byte %r" % line[:20])

    @staticmethod
    def _hashable(v):
        return tuple(v) if isinstance(v, list) else v


def parse_info(text):
    """INFO / CLUSTER INFO text as a dict of str -> str."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def _crc16(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def key_slot(key):
    """The cluster slot of `key`, computed here (CRC16/XMODEM with hash tags), like
    CLUSTER KEYSLOT."""
    if isinstance(key, str):
        key = key.encode()
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return _crc16(key) % SLOTS


def key_for_slot(slot, prefix="k"):
    """A key `prefix` + "{tag}" whose slot is `slot` (tag found by search, deterministic)."""
    i = 0
    while True:
        key = "%s{%d}" % (prefix, i)
        if key_slot(key) == slot:
            return key
        i += 1


# ---------------------------------------------------------------------------------------------
# processes

_live = set()  # _Server objects not stopped yet, for atexit
_live_dirs = set()
_lock = threading.Lock()


def _cleanup_all():
    for server in list(_live):
        server.kill()
    for d in list(_live_dirs):
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_all)

try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


def _die_with_parent():
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _wait(what, predicate, timeout, interval=0.05, describe=None):
    """Polls predicate() until it returns a truthy value (returned); exceptions count as not
    yet. Raises TimeoutError naming `what` (and describe() or the last exception)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except (OSError, RespError, ValueError, IndexError, KeyError) as e:
            last = e
        if time.monotonic() >= deadline:
            detail = describe() if describe else repr(last)
            raise TimeoutError("%s: not within %.1f s (%s)" % (what, timeout, detail))
        time.sleep(interval)


class _Server:
    """One redis-server (or sentinel) process in its own directory under `root`.
    `make_args(port, bus_port, dir)` returns the command line; `sentinel` and `bus` say whether
    a config file is written by make_args and whether a bus port is needed."""

    def __init__(self, root, make_args, bus=False, password=None, username=None, name="redis"):
        self.root, self.make_args, self.bus = root, make_args, bus
        self.password, self.username, self.name = password, username, name
        self.proc = None
        self.port = self.bus_port = None
        self.dir = None

    @property
    def address(self):
        return "%s:%d" % (HOST, self.port)

    @property
    def log_path(self):
        return os.path.join(self.dir, "redis.log")

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def spawn(self, port=None):
        """Starts the process (on `port`, else a fresh one; a fresh bus port). Does not wait."""
        self.port = port or free_port()
        self.bus_port = free_port() if self.bus else None
        self.dir = os.path.join(self.root, "%s-%d" % (self.name, self.port))
        os.makedirs(self.dir, exist_ok=True)
        args = self.make_args(self.port, self.bus_port, self.dir)
        self.proc = subprocess.Popen(args, cwd=self.dir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        with _lock:
            _live.add(self)

    def _answers(self):
        """This very process answers on its port (not another one that took the port)."""
        with self.client(timeout=1) as c:
            info = parse_info(c.call("INFO", "server"))
        return int(info.get("process_id", -1)) == self.proc.pid

    def wait_up(self, timeout):
        """Waits until the process answers; False when it exited (port taken?)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self._answers():
                    return True
            except (OSError, RespError):
                pass
            time.sleep(0.03)
        raise TimeoutError("%s on port %d did not answer within %.1f s; log:\n%s"
                           % (self.name, self.port, timeout, self.log_tail()))

    def start(self, timeout, port=None, attempts=5):
        """spawn + wait_up, retrying on fresh ports when the process exits during startup
        (its port was taken by someone else). With `port`, only that port is tried."""
        for attempt in range(attempts if port is None else 1):
            if self.proc is None or self.proc.poll() is not None or attempt:
                self.spawn(port)
            if self.wait_up(timeout):
                return
            self.proc.wait()
        raise RuntimeError("%s could not start (port %s); log:\n%s"
                           % (self.name, self.port, self.log_tail()))

    def client(self, timeout=5.0):
        return RespClient(self.port, password=self.password, username=self.username,
                          timeout=timeout)

    def call(self, *args, raise_errors=True, timeout=5.0):
        with self.client(timeout=timeout) as c:
            return c.call(*args, raise_errors=raise_errors)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.proc.send_signal(sig)
                except ProcessLookupError:
                    pass
            if sig == signal.SIGKILL:
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        if sig == signal.SIGKILL:
            with _lock:
                _live.discard(self)


def _auth_args(password, username, replication=True):
    """Server arguments for the password: requirepass (default user), or with a username an
    ACL user with all rights and the default user off; masterauth/masteruser for replicas."""
    if password is None:
        return []
    if username is None:
        args = ["--requirepass", password]
        if replication:
            args += ["--masterauth", password]
        return args
    args = ["--user", "default", "off", "--user", username, "on", ">" + password,
            "~*", "&*", "+@all"]
    if replication:
        args += ["--masteruser", username, "--masterauth", password]
    return args


def _base_args(port, dirpath):
    return [REDIS_SERVER, "--port", str(port), "--bind", HOST, "--save", "",
            "--appendonly", "no", "--dir", dirpath, "--repl-diskless-sync-delay", "0",
            "--logfile", os.path.join(dirpath, "redis.log"), "--daemonize", "no"]


class _Topology:
    def _init_root(self, prefix):
        self.root = tempfile.mkdtemp(prefix=prefix)
        with _lock:
            _live_dirs.add(self.root)
        self._stopped = False

    def stop(self):
        """Kills every process and removes the temporary directory. Idempotent.
        With BULWARK_KEEP_REDIS_DIRS=1 the directory (logs) is kept and its path printed."""
        if getattr(self, "_stopped", True):
            return
        self._stopped = True
        for s in self._servers():
            s.kill()
        with _lock:
            _live_dirs.discard(self.root)
        if os.environ.get("BULWARK_KEEP_REDIS_DIRS") == "1":
            print("redis_topology: kept", self.root)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def logs(self, lines=15):
        """The last lines of every process's log, for failure messages."""
        return "\n".join("== %s %s ==\n%s" % (s.name, s.port, s.log_tail(lines))
                         for s in self._servers())


# ---------------------------------------------------------------------------------------------
# Cluster


class Cluster(_Topology):
    """N cluster-enabled masters (no replicas), slots split evenly (node i owns the i-th
    range), set up with CLUSTER SET-CONFIG-EPOCH / ADDSLOTSRANGE / MEET, ready once every node
    says cluster_state:ok and all agree on the slot map."""

    def __init__(self, masters=3, password=None, username=None, node_timeout_ms=2000,
                 start_timeout=30.0, extra_args=()):
        if masters < 1:
            raise ValueError("masters must be >= 1")
        self.password, self.username = password, username
        self.node_timeout_ms = node_timeout_ms
        self._init_root("bulwark-redis-cluster-")
        self.nodes = []
        try:
            def make_args(port, bus_port, d):
                return (_base_args(port, d) +
                        ["--cluster-enabled", "yes",
                         "--cluster-config-file", os.path.join(d, "nodes-%d.conf" % port),
                         "--cluster-port", str(bus_port),
                         "--cluster-announce-ip", HOST,
                         "--cluster-node-timeout", str(node_timeout_ms),
                         "--cluster-require-full-coverage", "yes"] +
                        _auth_args(password, username) + list(extra_args))
            self.nodes = [_Server(self.root, make_args, bus=True, password=password,
                                  username=username, name="cluster")
                          for _ in range(masters)]
            for n in self.nodes:
                n.spawn()
            for n in self.nodes:
                n.start(start_timeout)
            self.ids = {}
            per = SLOTS // masters
            for i, n in enumerate(self.nodes):
                self.ids[n.port] = n.call("CLUSTER", "MYID")
                n.call("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                first = i * per
                last = SLOTS - 1 if i == masters - 1 else (i + 1) * per - 1
                n.call("CLUSTER", "ADDSLOTSRANGE", first, last)
            seed = self.nodes[0]
            for n in self.nodes[1:]:
                n.call("CLUSTER", "MEET", HOST, seed.port, seed.bus_port)
            self.wait_ok(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _servers(self):
        return self.nodes

    # -- addresses

    @property
    def ports(self):
        return [n.port for n in self.nodes]

    @property
    def addresses(self):
        return [n.address for n in self.nodes]

    def node(self, port):
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError("no cluster node on port %d" % port)

    def client(self, port, timeout=5.0):
        """A RespClient on that node, authenticated."""
        return self.node(port).client(timeout=timeout)

    def call(self, port, *args, raise_errors=True):
        """One command on one node (no redirection followed)."""
        return self.node(port).call(*args, raise_errors=raise_errors)

    def _any(self):
        for n in self.nodes:
            if n.alive():
                return n
        raise RuntimeError("no cluster node alive")

    # -- state

    def slot_map(self, port=None):
        """Sorted [(first, last, master_port)] from CLUSTER SLOTS of one node."""
        node = self.node(port) if port else self._any()
        ranges = node.call("CLUSTER", "SLOTS")
        return sorted((r[0], r[1], int(r[2][1])) for r in ranges)

    def _migrations(self, node):
        """'[slot->-id]' / '[slot-<-id]' markers in this node's own CLUSTER NODES line."""
        for line in node.call("CLUSTER", "NODES").splitlines():
            parts = line.split()
            if len(parts) > 2 and "myself" in parts[2]:
                return [p for p in parts[8:] if p.startswith("[")]
        return []

    def _agreed(self, expect_stable=True):
        maps = []
        for n in self.nodes:
            info = parse_info(n.call("CLUSTER", "INFO", timeout=2))
            if (info.get("cluster_state") != "ok" or
                    int(info.get("cluster_known_nodes", 0)) != len(self.nodes) or
                    int(info.get("cluster_slots_assigned", 0)) != SLOTS or
                    int(info.get("cluster_slots_pfail", 0)) or
                    int(info.get("cluster_slots_fail", 0))):
                return False
            m = self.slot_map(n.port)
            if sum(b - a + 1 for a, b, _ in m) != SLOTS:
                return False
            maps.append(m)
            if expect_stable and self._migrations(n):
                return False
        return all(m == maps[0] for m in maps)

    def wait_ok(self, timeout=30.0):
        """Waits until every node says cluster_state:ok, knows all nodes, and all nodes report
        the same complete slot map with no slot migrating or importing."""
        _wait("redis cluster ok", self._agreed, timeout,
              describe=lambda: self._state_text())

    def _state_text(self):
        out = []
        for n in self.nodes:
            try:
                info = parse_info(n.call("CLUSTER", "INFO", timeout=1))
                out.append("%d: state=%s known=%s assigned=%s" % (
                    n.port, info.get("cluster_state"), info.get("cluster_known_nodes"),
                    info.get("cluster_slots_assigned")))
            except (OSError, RespError) as e:
                out.append("%d: %r" % (n.port, e))
        return "; ".join(out) + "\n" + self.logs(8)

    def slot_for_key(self, key):
        """CLUSTER KEYSLOT asked of a node."""
        return self._any().call("CLUSTER", "KEYSLOT", key)

    def owner(self, slot, port=None):
        """Port of the master owning `slot` according to one node's CLUSTER SLOTS."""
        for first, last, p in self.slot_map(port):
            if first <= slot <= last:
                return p
        raise KeyError("slot %d not served" % slot)

    def node_for_key(self, key):
        """Port of the master owning the key's slot."""
        return self.owner(self.slot_for_key(key))

    def slots_of(self, port):
        """[(first, last)] of the slots `port` owns."""
        return [(a, b) for a, b, p in self.slot_map() if p == port]

    # -- data

    def _routed(self, *args, key):
        port = self.node_for_key(key)
        asking = False
        for _ in range(5):
            with self.client(port) as c:
                if asking:
                    c.call("ASKING")
                reply = c.call(*args, raise_errors=False)
            if isinstance(reply, RespError) and reply.code in ("MOVED", "ASK"):
                port, asking = reply.port, reply.code == "ASK"
                continue
            if isinstance(reply, RespError):
                raise reply
            return reply
        raise RuntimeError("too many redirections for %r" % (key,))

    def get(self, key):
        """GET routed to the key's owner, following MOVED/ASK."""
        return self._routed("GET", key, key=key)

    def set(self, key, value, *options):
        """SET routed to the key's owner, following MOVED/ASK."""
        return self._routed("SET", key, value, *options, key=key)

    def command(self, key, *args):
        """Any single-key command routed by `key`."""
        return self._routed(*args, key=key)

    def keys_on(self, port, pattern="*"):
        """Sorted keys stored on that node (KEYS)."""
        return sorted(self.call(port, "KEYS", pattern))

    def flushall(self):
        for n in self.nodes:
            n.call("FLUSHALL")

    # -- resharding

    def _migrate_args(self):
        if self.password is None:
            return []
        if self.username is None:
            return ["AUTH", self.password]
        return ["AUTH2", self.username, self.password]

    def begin_move(self, slot, to_port, migrate_keys=False):
        """Starts moving `slot` to `to_port`: CLUSTER SETSLOT IMPORTING on the target, then
        MIGRATING on the owner. Keys stay on the owner unless migrate_keys (then all are moved,
        slot ownership not yet changed). Meanwhile the owner answers ASK for keys it does not
        hold, the target answers MOVED unless the client sent ASKING. Returns the old owner."""
        from_port = self.owner(slot)
        if from_port == to_port:
            raise ValueError("slot %d already on %d" % (slot, to_port))
        self.call(to_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", self.ids[from_port])
        self.call(from_port, "CLUSTER", "SETSLOT", slot, "MIGRATING", self.ids[to_port])
        self._moving = getattr(self, "_moving", {})
        self._moving[slot] = (from_port, to_port)
        if migrate_keys:
            self.migrate_keys(slot)
        return from_port

    def migrate_keys(self, slot, count=None):
        """MIGRATEs keys of a slot being moved (begin_move first) from the owner to the target:
        all of them, or at most `count`. Returns how many were moved."""
        from_port, to_port = self._moving[slot]
        moved = 0
        while count is None or moved < count:
            batch = 100 if count is None else min(100, count - moved)
            keys = self.call(from_port, "CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            self.call(from_port, "MIGRATE", HOST, to_port, "", 0, 5000,
                      *self._migrate_args(), "KEYS", *keys)
            moved += len(keys)
        return moved

    def finish_move(self, slot, to_port=None, timeout=15.0):
        """Moves the remaining keys, then CLUSTER SETSLOT NODE on the target, the old owner and
        every other master; waits until all nodes agree the target owns the slot."""
        from_port, target = self._moving[slot]
        if to_port is not None and to_port != target:
            raise ValueError("slot %d is being moved to %d, not %d" % (slot, target, to_port))
        self.migrate_keys(slot)
        new_id = self.ids[target]
        order = [target, from_port] + [p for p in self.ports if p not in (target, from_port)]
        for p in order:
            if self.node(p).alive():
                self.call(p, "CLUSTER", "SETSLOT", slot, "NODE", new_id)
        del self._moving[slot]
        _wait("slot %d owned by %d everywhere" % (slot, target),
              lambda: self._agreed() and all(self.owner(slot, n.port) == target
                                             for n in self.nodes if n.alive()),
              timeout, describe=self._state_text)

    def move_slot(self, slot, to_port, timeout=15.0):
        """A complete resharding of one slot with its keys (begin_move + finish_move)."""
        self.begin_move(slot, to_port)
        self.finish_move(slot, to_port, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Sentinel


class Sentinel(_Topology):
    """A master, `replicas` replicas (--replicaof) and `sentinels` sentinels monitoring it
    (quorum: a majority of the sentinels unless given). Ready once replication links are up and
    every sentinel knows the master, all replicas and all other sentinels.

    password/username: requirepass (or an ACL user, default user off) on master and replicas,
    masterauth/masteruser, and `sentinel auth-pass`/`auth-user` in each sentinel.
    sentinel_password: requirepass on the sentinels themselves (+ `sentinel sentinel-pass`)."""

    def __init__(self, replicas=1, sentinels=3, master_name="mymaster", down_after_ms=1000,
                 failover_timeout_ms=3000, password=None, username=None,
                 sentinel_password=None, quorum=None, start_timeout=30.0):
        if replicas < 0 or sentinels < 1:
            raise ValueError("need replicas >= 0 and sentinels >= 1")
        self.master_name = master_name
        self.password, self.username = password, username
        self.sentinel_password = sentinel_password
        self.quorum = quorum or sentinels // 2 + 1
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self._init_root("bulwark-redis-sentinel-")
        self.servers, self.sentinels = [], []
        self.killed = []
        try:
            self.servers.append(self._server(None))
            master = self.servers[0]
            master.start(start_timeout)
            self.initial_master_port = master.port
            for _ in range(replicas):
                self.servers.append(self._server(master.port))
            for r in self.servers[1:]:
                r.spawn()
            for r in self.servers[1:]:
                r.start(start_timeout)
            # Replicas linked before the sentinels start: sentinels learn replicas from the
            # master's INFO, which they otherwise refresh only every 10 s.
            _wait("replication links up", lambda: self._replication_up(master.port, replicas),
                  start_timeout, describe=lambda: self.logs(8))
            for _ in range(sentinels):
                self.sentinels.append(self._sentinel(master.port))
            for s in self.sentinels:
                s.spawn()
            for s in self.sentinels:
                s.start(start_timeout)
            _wait("sentinels know master, replicas and each other", self._sentinels_ready,
                  start_timeout, describe=lambda: self._sentinel_state() + "\n" + self.logs(8))
        except BaseException:
            self.stop()
            raise

    def _servers(self):
        return self.servers + self.sentinels

    def _server(self, master_port):
        def make_args(port, _bus, d):
            args = _base_args(port, d) + _auth_args(self.password, self.username)
            if master_port is not None:
                args += ["--replicaof", HOST, str(master_port)]
            return args
        return _Server(self.root, make_args, password=self.password, username=self.username,
                       name="redis")

    def _sentinel(self, master_port):
        def make_args(port, _bus, d):
            name = self.master_name
            lines = ["port %d" % port, "bind %s" % HOST, "daemonize no", 'dir "%s"' % d,
                     'logfile "%s"' % os.path.join(d, "redis.log"),
                     "sentinel resolve-hostnames no",
                     "sentinel monitor %s %s %d %d" % (name, HOST, master_port, self.quorum),
                     "sentinel down-after-milliseconds %s %d" % (name, self.down_after_ms),
                     "sentinel failover-timeout %s %d" % (name, self.failover_timeout_ms),
                     "sentinel parallel-syncs %s 1" % name]
            if self.password is not None:
                lines.append("sentinel auth-pass %s %s" % (name, self.password))
                if self.username is not None:
                    lines.append("sentinel auth-user %s %s" % (name, self.username))
            if self.sentinel_password is not None:
                lines += ["requirepass %s" % self.sentinel_password,
                          "sentinel sentinel-pass %s" % self.sentinel_password]
            conf = os.path.join(d, "sentinel.conf")
            with open(conf, "w") as f:
                f.write("\n".join(lines) + "\n")
            return [REDIS_SERVER, conf, "--sentinel"]
        return _Server(self.root, make_args, password=self.sentinel_password, name="sentinel")

    # -- addresses

    @property
    def sentinel_ports(self):
        return [s.port for s in self.sentinels]

    @property
    def sentinel_addresses(self):
        return [s.address for s in self.sentinels]

    @property
    def server_ports(self):
        """Ports of every data server started (master and replicas, killed ones included)."""
        return [s.port for s in self.servers]

    def server(self, port):
        for s in self.servers:
            if s.port == port:
                return s
        raise KeyError("no redis server on port %d" % port)

    def client(self, port, timeout=5.0):
        """A RespClient on a data server (master or replica), authenticated."""
        return self.server(port).client(timeout=timeout)

    def call(self, port, *args, raise_errors=True):
        return self.server(port).call(*args, raise_errors=raise_errors)

    def sentinel_call(self, *args, index=None, raise_errors=True):
        """A command on one sentinel (the first alive one unless `index`)."""
        targets = [self.sentinels[index]] if index is not None else \
            [s for s in self.sentinels if s.alive()]
        last = None
        for s in targets:
            try:
                return s.call(*args, raise_errors=raise_errors, timeout=2)
            except OSError as e:
                last = e
        raise last or RuntimeError("no sentinel alive")

    # -- state

    def _replication_up(self, master_port, replicas):
        info = parse_info(self.call(master_port, "INFO", "replication"))
        if int(info.get("connected_slaves", 0)) != replicas:
            return False
        for r in self.servers:
            if r.port != master_port and r.alive():
                rinfo = parse_info(r.call("INFO", "replication", timeout=2))
                if rinfo.get("master_link_status") != "up":
                    return False
        return True

    def _sentinels_ready(self):
        want_replicas = len(self.servers) - 1
        for s in self.sentinels:
            m = _pairs(s.call("SENTINEL", "MASTER", self.master_name, timeout=2))
            if m.get("flags") != "master" or int(m["port"]) != self.initial_master_port:
                return False
            reps = [_pairs(r) for r in s.call("SENTINEL", "REPLICAS", self.master_name,
                                              timeout=2)]
            if len(reps) != want_replicas or any(r.get("flags") != "slave" or
                                                 r.get("master-link-status") != "ok"
                                                 for r in reps):
                return False
            if len(s.call("SENTINEL", "SENTINELS", self.master_name, timeout=2)) != \
                    len(self.sentinels) - 1:
                return False
        return True

    def _sentinel_state(self):
        out = []
        for s in self.sentinels:
            try:
                m = _pairs(s.call("SENTINEL", "MASTER", self.master_name, timeout=1))
                out.append("%d: master=%s:%s flags=%s replicas=%s sentinels=%s" % (
                    s.port, m.get("ip"), m.get("port"), m.get("flags"),
                    m.get("num-slaves"), m.get("num-other-sentinels")))
            except (OSError, RespError) as e:
                out.append("%d: %r" % (s.port, e))
        return "; ".join(out)

    def master_port(self):
        """The master's port according to a sentinel (SENTINEL get-master-addr-by-name)."""
        reply = self.sentinel_call("SENTINEL", "get-master-addr-by-name", self.master_name)
        return int(reply[1])

    def master_ports_seen(self):
        """{sentinel port: master port or None} over the live sentinels."""
        out = {}
        for s in self.sentinels:
            if s.alive():
                try:
                    r = s.call("SENTINEL", "get-master-addr-by-name", self.master_name,
                               timeout=2)
                    out[s.port] = int(r[1]) if r else None
                except (OSError, RespError):
                    out[s.port] = None
        return out

    def role(self, port):
        """ROLE's first element ('master', 'slave') of a data server; None when unreachable."""
        try:
            return self.call(port, "ROLE")[0]
        except (OSError, RespError):
            return None

    def replica_ports(self):
        """Live data servers that answer ROLE as replicas."""
        return [s.port for s in self.servers if s.alive() and self.role(s.port) == "slave"]

    # -- faults

    def kill_master(self):
        """SIGKILLs the current master (as a sentinel names it). Returns its port."""
        port = self.master_port()
        self.server(port).kill(signal.SIGKILL)
        self.killed.append(port)
        return port

    def kill_sentinel(self, index):
        """SIGKILLs one sentinel. Returns its port."""
        s = self.sentinels[index]
        s.kill(signal.SIGKILL)
        return s.port

    def restart(self, port, timeout=15.0):
        """Starts a killed data server again on its port, as a replica of the current master
        (as Sentinel would reconfigure it anyway)."""
        server = self.server(port)
        if server.alive():
            raise RuntimeError("redis on %d is still running" % port)
        master = self.master_port()

        def make_args(p, _bus, d):
            return (_base_args(p, d) + _auth_args(self.password, self.username) +
                    ["--replicaof", HOST, str(master)])
        server.make_args = make_args
        server.start(timeout, port=port)
        if port in self.killed:
            self.killed.remove(port)

    def wait_failover(self, timeout=15.0, old_port=None):
        """Waits until every live sentinel names the same master, other than `old_port` (by
        default the last one kill_master() killed), and that server answers ROLE as master.
        Returns its port."""
        if old_port is None and self.killed:
            old_port = self.killed[-1]

        def done():
            seen = set(self.master_ports_seen().values())
            if len(seen) != 1:
                return None
            port = seen.pop()
            if port is None or port == old_port:
                return None
            return port if self.role(port) == "master" else None
        return _wait("sentinel failover away from %s" % old_port, done, timeout, interval=0.1,
                     describe=lambda: "%s; %s\n%s" % (self.master_ports_seen(),
                                                      self._sentinel_state(), self.logs(10)))


def _pairs(flat):
    """A flat [k1, v1, k2, v2, ...] reply as a dict."""
    return dict(zip(flat[0::2], flat[1::2]))
