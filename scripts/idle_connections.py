#!/usr/bin/env python3
"""Opens N keep-alive client connections to a proxy, sends one request on each (so each is a
used, now idle, keep-alive connection), and reports the RSS of the proxy's processes.
Usage: idle_connections.py PORT N PID [PID...]"""
import resource
import selectors
import socket
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%s/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def main():
    port, n, pids = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = rss_kib(pids)
    socks = []
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    batch = 500
    for start in range(0, n, batch):
        group = []
        for _ in range(min(batch, n - start)):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(request)
            group.append(s)
        sel = selectors.DefaultSelector()
        for s in group:
            sel.register(s, selectors.EVENT_READ)
        pending = len(group)
        deadline = time.time() + 30
        while pending and time.time() < deadline:
            for key, _ in sel.select(1):
                data = key.fileobj.recv(65536)
                if b"\r\n\r\n" in data or not data:
                    sel.unregister(key.fileobj)
                    pending -= 1
        sel.close()
        socks.extend(group)
    time.sleep(1.0)
    after = rss_kib(pids)
    alive = 0
    for s in socks:  # still open (not closed by the proxy)?
        s.setblocking(False)
        try:
            alive += s.recv(1) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    print("connections=%d still_open=%d rss_before_kib=%d rss_after_kib=%d per_connection_bytes=%.0f"
          % (n, alive, before, after, (after - before) * 1024.0 / max(n, 1)))
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
