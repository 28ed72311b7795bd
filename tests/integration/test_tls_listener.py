"""TLS on a listener (termination): clients speak HTTPS to bulwark, which verifies nothing of
them unless client_ca asks for client certificates, forwards plain HTTP with X-Forwarded-Proto:
https, counts handshakes, exports the certificate's expiry, and picks up a rotated certificate
(a Kubernetes Secret's ..data swap) for new connections without dropping open ones."""
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from harness import BULWARK, Bulwark, Testd, crc_hex, pattern, wait_for
from test_tls_upstream import check, sample
from tls_backend import pki

HAVE_OPENSSL = shutil.which("openssl") is not None

TEMPLATE = """
workers: 2
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: secure
    listen: 127.0.0.1:{port}
    timeouts: {{ header: 1s }}
    tls: {{ cert: "{cert}", key: "{key}"{extra} }}
    routes:
      - name: all
        match: {{ prefix: / }}
        upstream: app
upstreams:
  - name: app
    endpoints: [{upstream}]
"""


def client_context(ca, cert=None, key=None, max_version=None):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    if cert:
        ctx.load_cert_chain(cert, key)
    if max_version:
        ctx.maximum_version = max_version
    return ctx


@unittest.skipUnless(HAVE_OPENSSL, "needs the openssl command to make test certificates")
class TlsListener(unittest.TestCase):
    def setUp(self):
        self.pki = pki()
        self.backend = Testd()
        self.proxy = None

    def tearDown(self):
        code = self.proxy.stop() if self.proxy else 0
        self.backend.stop()
        if self.proxy:
            self.assertEqual(code, 0, self.proxy.stderr_text()[-3000:])

    def start(self, cert=None, key=None, extra=""):
        self.proxy = Bulwark(TEMPLATE, upstream=self.backend.address,
                             cert=cert or self.pki.server_cert, key=key or self.pki.server_key,
                             extra=extra)

    def conn(self, ctx=None):
        return http.client.HTTPSConnection("localhost", self.proxy.port, timeout=10,
                                           context=ctx or client_context(self.pki.ca))

    def handshakes(self, result):
        return sample(self.proxy.metrics(), "bulwark_tls_handshakes_total",
                      side="downstream", name="secure", result=result) or 0

    def test_https_request_forwarded_as_http_with_x_forwarded_proto(self):
        self.start()
        c = self.conn()
        c.request("GET", "/h?headers=1")
        r = c.getresponse()
        body = r.read()
        self.assertEqual(r.status, 200, body[:300])
        self.assertEqual(c.sock.selected_alpn_protocol(), "http/1.1")  # h2 not offered yet
        headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
        self.assertEqual(headers["x-forwarded-proto"], "https")
        # Keep-alive over the same TLS connection, with a large body each way.
        data = os.urandom(1 << 20)
        c.request("POST", "/up", body=data)
        r = c.getresponse()
        r.read()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("x-testd-body-crc32"), crc_hex(data))
        c.request("GET", "/down?size=%d" % (4 << 20))
        r = c.getresponse()
        got = r.read()
        self.assertEqual(r.status, 200)
        self.assertEqual(len(got), 4 << 20)
        self.assertEqual(crc_hex(got), crc_hex(pattern(4 << 20)))
        c.close()
        self.assertEqual(self.handshakes("success"), 1)
        self.assertEqual(self.handshakes("failure"), 0)

    @unittest.skipUnless(shutil.which("curl"), "curl is not installed")
    def test_curl_with_cacert(self):
        self.start()
        p = subprocess.run(["curl", "-sS", "--cacert", self.pki.ca, "-o", "/dev/null", "-w",
                            "%{http_code} %{ssl_verify_result}",
                            "https://localhost:%d/curl" % self.proxy.port],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual((p.returncode, p.stdout), (0, "200 0"), p.stderr)
        # Without the CA, curl refuses Bulwark's certificate.
        p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "https://localhost:%d/" % self.proxy.port],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 60, p.stderr)  # CURLE_PEER_FAILED_VERIFICATION

    def test_certificate_expiry_is_exported(self):
        self.start()
        out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", self.pki.server_cert],
                             capture_output=True, text=True, check=True).stdout
        not_after = ssl.cert_time_to_seconds(out.strip().split("=", 1)[1])
        self.assertEqual(sample(self.proxy.metrics(), "bulwark_tls_certificate_expiry_seconds",
                                name="secure"), not_after)

    def test_plain_http_and_garbage_are_refused_without_harm(self):
        self.start()
        for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\x05hello"):
            s = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)
            s.sendall(payload)
            data = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            s.close()
            self.assertNotIn(b"HTTP/1.1", data)  # never answered in clear text
        wait_for(lambda: self.handshakes("failure") >= 2, what="both refusals counted")
        c = self.conn()
        c.request("GET", "/")
        self.assertEqual(c.getresponse().status, 200)

    def test_stalled_handshake_is_closed_at_the_header_timeout(self):
        self.start()
        s = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)
        t = time.time()
        self.assertEqual(s.recv(100), b"")  # closed, nothing sent in clear text
        self.assertLess(time.time() - t, 4)
        s.close()

    def test_min_version_1_3_refuses_a_tls_1_2_client(self):
        self.start(extra=', min_version: "1.3"')
        c = self.conn(client_context(self.pki.ca, max_version=ssl.TLSVersion.TLSv1_2))
        with self.assertRaises(ssl.SSLError):
            c.request("GET", "/")
        wait_for(lambda: self.handshakes("failure") >= 1, what="the refusal counted")
        c = self.conn()
        c.request("GET", "/")
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(c.sock.version(), "TLSv1.3")

    def test_client_certificates_required_with_client_ca(self):
        self.start(extra=', client_ca: "%s"' % self.pki.ca)
        seen = self.backend.stats()["requests"]  # (each /__stats counts itself)
        # Without a certificate: no response (in TLS 1.3 the refusal arrives as an alert on
        # the client's first read), and nothing forwarded.
        c = self.conn()
        with self.assertRaises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            c.request("GET", "/")
            c.getresponse().read()
        c.close()
        wait_for(lambda: self.handshakes("failure") >= 1, what="the refusal counted")
        self.assertEqual(self.backend.stats()["requests"], seen + 1)
        c = self.conn(client_context(self.pki.ca, self.pki.client_cert, self.pki.client_key))
        c.request("GET", "/")
        self.assertEqual(c.getresponse().status, 200)
        c.close()
        self.assertEqual(self.backend.stats()["requests"], seen + 3)

    def test_certificate_rotation_by_secret_swap_loses_no_request(self):
        # The layout of a Kubernetes Secret volume: tls.crt -> ..data/tls.crt, ..data -> a
        # timestamped directory; an update makes a new directory and renames a new ..data
        # symlink over the old one.
        d = tempfile.mkdtemp(prefix="bulwark-secret-")
        self.addCleanup(shutil.rmtree, d, True)

        def version(name, cert, key):
            os.mkdir(os.path.join(d, name))
            shutil.copy(cert, os.path.join(d, name, "tls.crt"))
            shutil.copy(key, os.path.join(d, name, "tls.key"))

        version("..v1", self.pki.server_cert, self.pki.server_key)
        os.symlink("..v1", os.path.join(d, "..data"))
        for f in ("tls.crt", "tls.key"):
            os.symlink(os.path.join("..data", f), os.path.join(d, f))
        self.start(cert=os.path.join(d, "tls.crt"), key=os.path.join(d, "tls.key"))

        ctx = client_context(self.pki.ca)
        kept = self.conn(ctx)  # opened before the rotation, used after it
        kept.request("GET", "/before")
        kept.getresponse().read()

        seen, failures, stop = set(), [], threading.Event()

        def loop():
            while not stop.is_set():
                try:
                    c = self.conn(ctx)
                    c.request("GET", "/")
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        failures.append(r.status)
                    sans = tuple(v for k, v in c.sock.getpeercert()["subjectAltName"])
                    seen.add(sans)
                    c.close()
                except Exception as e:  # noqa: BLE001
                    failures.append(repr(e))

        threads = [threading.Thread(target=loop) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)
            version("..v2", self.pki.multi_cert, self.pki.multi_key)
            os.symlink("..v2", os.path.join(d, "..data_tmp"))
            os.rename(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
            wait_for(lambda: any("other.example" in s for s in seen), timeout=10,
                     what="new connections served the rotated certificate")
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        self.assertEqual(failures, [])
        self.assertEqual(len(seen), 2, seen)
        kept.request("GET", "/after")
        r = kept.getresponse()
        r.read()
        self.assertEqual(r.status, 200)
        # One swap, one reload (both files' watchers see it), named for what triggered it.
        log = self.proxy.stderr_text().splitlines()
        self.assertEqual(len([l for l in log if "config reloaded (certificate files changed)" in l]),
                         1, log)
        self.assertEqual([l for l in log if "config reloaded (SIGHUP)" in l], [])
        self.assertEqual(self.proxy.metric("bulwark_config_reloads_total", result="success"), 1)


@unittest.skipUnless(HAVE_OPENSSL, "needs the openssl command to make test certificates")
class CheckListenerTls(unittest.TestCase):
    HEAD = ("listeners:\n"
            "  - name: in\n"
            "    listen: 127.0.0.1:8443\n"
            "    tls:\n")
    TAIL = ("    routes: [{ name: api, upstream: app }]\n"
            "upstreams:\n"
            "  - name: app\n"
            "    endpoints: [127.0.0.1:8080]\n")

    def run_check(self, tls_lines):
        return check(self.HEAD + tls_lines + self.TAIL)

    def test_valid_files(self):
        p = pki()
        path, code, out, err = self.run_check("      cert: %s\n      key: %s\n" %
                                              (p.server_cert, p.server_key))
        self.assertEqual(code, 0, err)
        self.assertEqual(err, "")

    def test_expired_certificate_is_warned_about(self):
        p = pki()
        path, code, out, err = self.run_check("      cert: %s\n      key: %s\n" %
                                              (p.expired_cert, p.expired_key))
        self.assertEqual(code, 0, err)
        self.assertEqual(out, "%s: ok\n" % path)
        self.assertIn("warning: %s:5:7: listeners[0].tls.cert: the certificate in '%s' has expired"
                      % (path, p.expired_cert), err)

    def test_missing_key_file(self):
        p = pki()
        path, code, out, err = self.run_check("      cert: %s\n      key: /nonexistent/tls.key\n" %
                                              p.server_cert)
        self.assertNotEqual(code, 0)
        self.assertIn("%s:6:12: listeners[0].tls.key: cannot read '/nonexistent/tls.key'" % path, err)

    def test_key_of_another_certificate(self):
        p = pki()
        path, code, out, err = self.run_check("      cert: %s\n      key: %s\n" %
                                              (p.server_cert, p.other_key))
        self.assertNotEqual(code, 0)
        self.assertIn("listeners[0].tls.key:", err)
        self.assertIn("does not match the certificate", err)

    def test_cert_required_and_min_version_checked(self):
        p = pki()
        path, code, out, err = self.run_check('      key: %s\n      min_version: "1.1"\n' %
                                              p.server_key)
        self.assertNotEqual(code, 0)
        self.assertIn("listeners[0].tls.cert", err)
        self.assertIn("listeners[0].tls.min_version: must be 1.2 or 1.3", err)


if __name__ == "__main__":
    unittest.main()
