#!/usr/bin/env python3
"""Differential conformance run: the request table of tests/integration/conformance_cases.py
(and RESPONSE_CASES of conformance_responses.py, when that module exists) sent to Bulwark,
HAProxy and NGINX side by side, each in front of the same recording backend. Prints Markdown
tables. Run through scripts/differential.sh, which installs the peers and builds Bulwark.

A request cell reads "STATUSES CONN N": the statuses of the responses in order ("-": none),
C if the proxy closed the connection, K if it kept it usable (a probe request on it was
answered), T if it neither answered nor closed within 2 s; N is the number of complete
requests the backend received. A "!" marks a Bulwark cell that differs from the table's
expectation (the conformance test would fail). A response cell is the status the client got
("cut" when the body did not arrive whole), "closed" when the connection closed before any
response, "timeout" when nothing came within 3 s."""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

HAPROXY_CFG = """
global
  maxconn 1000
defaults
  mode http
  timeout connect 1s
  timeout client 10s
  timeout server 10s
  timeout http-request 10s
  option http-keep-alive
frontend inbound
  bind 127.0.0.1:{port}
  default_backend app
backend app
  server s1 {upstream}
"""

NGINX_CFG = """
{user}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream app {{ server {upstream}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
    }}
  }}
}}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(port, proc, name, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited with %s" % (name, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s is not listening on %d" % (name, port))


class Peer:
    def __init__(self, name, argv, port, workdir):
        self.name = name
        self.port = port
        self.log = open(os.path.join(workdir, name + ".log"), "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        wait_listening(port, self.proc, name)

    def version(self):
        return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def tool_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bulwark", default=os.path.join(ROOT, "build", "bulwark"))
    parser.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    args = parser.parse_args()
    os.environ["BULWARK_BIN"] = os.path.abspath(args.bulwark)

    import conformance_cases
    from conformance_runner import (RecordingBackend, describe, expected_backend, normalize,
                                    run_request_case, run_response_case)
    from harness import Bulwark
    try:
        import conformance_responses
    except ImportError:
        conformance_responses = None

    workdir = tempfile.mkdtemp(prefix="bulwark-differential-")
    backend = RecordingBackend()
    peers = []
    bulwark = Bulwark(conformance_cases.CONFIG, upstream=backend.address)
    try:
        hport = free_port()
        hcfg = os.path.join(workdir, "haproxy.cfg")
        with open(hcfg, "w") as f:
            f.write(HAPROXY_CFG.format(port=hport, upstream=backend.address))
        peers.append(Peer("haproxy", [args.haproxy, "-db", "-f", hcfg], hport, workdir))
        nport = free_port()
        ndir = os.path.join(workdir, "nginx")
        os.makedirs(ndir)
        with open(os.path.join(ndir, "nginx.conf"), "w") as f:
            f.write(NGINX_CFG.format(port=nport, upstream=backend.address, dir=ndir,
                                     user="user root;" if os.geteuid() == 0 else ""))
        peers.append(Peer("nginx", [args.nginx, "-p", ndir, "-c", os.path.join(ndir, "nginx.conf")],
                          nport, workdir))

        print("%s, %s, %s; %s\n" % (
            tool_version([args.bulwark, "--version"]), tool_version([args.haproxy, "-v"]),
            tool_version([args.nginx, "-v"]), time.strftime("%Y-%m-%d")))
        print("| case | item | bulwark | haproxy | nginx |")
        print("|---|---|---|---|---|")
        mismatches = 0
        for case in conformance_cases.REQUEST_CASES:
            if not case.get("differential", True):
                continue
            expect = case["expect"]
            n = len(expect["status"])
            got = run_request_case(bulwark.port, backend, case, n)
            ok = (got["status"] == expect["status"] and got["closed"] == expect["closed"] and
                  [normalize(r) for r in got["backend"]] == expected_backend(case, backend.address))
            mismatches += not ok
            cells = [describe(got) + ("" if ok else " !")]
            for peer in peers:
                cells.append(describe(run_request_case(peer.port, backend, case, n)))
            print("| %s | %s | %s |" % (case["name"], case["item"], " | ".join(cells)))
        if conformance_responses:
            print("\n| response case | expected | bulwark | haproxy | nginx |")
            print("|---|---|---|---|---|")
            for case in conformance_responses.RESPONSE_CASES:
                cells = []
                for port in [bulwark.port] + [p.port for p in peers]:
                    cells.append(run_response_case(port, backend, case,
                                                   conformance_responses.RESPONSE_CASES))
                print("| %s | %s | %s |" % (case["name"], case["expect_status"], " | ".join(cells)))
        if mismatches:
            print("\n%d Bulwark result(s) differ from the table (marked !)" % mismatches)
        return 1 if mismatches else 0
    finally:
        bulwark.stop()
        for peer in peers:
            peer.stop()
        backend.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
