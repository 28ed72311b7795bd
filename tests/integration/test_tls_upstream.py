"""Upstream TLS origination: bulwark speaks HTTPS to a backend (tls_backend.TlsBackend, Python's
ssl module) and checks its certificate chain and name, sends SNI, reuses pooled TLS connections,
resumes sessions, presents a client certificate when configured, and turns a failed handshake
into 502 upstream-connect-failure, counted and logged with OpenSSL's reason."""
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import unittest

from harness import BULWARK, Bulwark, crc_hex, chunked, pattern, request, wait_for
from tls_backend import TlsBackend, pki

HAVE_OPENSSL = shutil.which("openssl") is not None

# One worker: pools (and perhaps the TLS session cache) are per worker, and the counts below
# (one handshake for keep-alive, resumptions) assume every request goes through the same one.
TEMPLATE = """
workers: 1
admin: {{ listen: 127.0.0.1:{admin} }}
access_log: {{ path: "off" }}
listeners:
  - name: inbound
    listen: 127.0.0.1:{port}
    routes:
      - name: all
        match: {{ prefix: / }}
        upstream: secure
upstreams:
  - name: secure
    endpoints: [{endpoint}]
{tls}{pool}"""

# OpenSSL's texts (X509_verify_cert_error_string) for a certificate whose issuer is not trusted:
# which one depends on what the server sends (leaf only, or leaf and its root). Older OpenSSL
# writes "self signed" without the hyphen.
UNKNOWN_ISSUER = ("unable to get local issuer certificate",
                  "self-signed certificate in certificate chain",
                  "self signed certificate in certificate chain",
                  "unable to verify the first certificate",
                  "unable to get issuer certificate")


def tls_block(**options):
    """The `tls:` block of the upstream, 4 spaces in; options with the value None are left out.
    Strings are written as YAML double-quoted scalars (JSON's syntax)."""
    items = [(k, v) for k, v in options.items() if v is not None]
    if not items:
        return "    tls: {}\n"
    out = "    tls:\n"
    for k, v in items:
        text = ("true" if v else "false") if isinstance(v, bool) else json.dumps(v)
        out += "      %s: %s\n" % (k, text)
    return out


def sample(metrics_text, metric, /, **labels):
    """Sum of the samples of `metric` whose labels include `labels` (None when there is none).
    Bulwark.metric cannot be used here: one of the labels is called `name`."""
    total, found = 0.0, False
    for line in metrics_text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != metric:
            continue
        have = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(have.get(k) == str(v) for k, v in labels.items()):
            total += float(m.group(3))
            found = True
    return total if found else None


def handshakes(proxy, result):
    """bulwark_tls_handshakes_total{side="upstream",name="secure",result=...}, 0 when absent."""
    return sample(proxy.metrics(), "bulwark_tls_handshakes_total",
                  side="upstream", name="secure", result=result) or 0


def check(text):
    """`bulwark --check -c FILE` on `text`: (path, exit code, stdout, stderr)."""
    d = tempfile.mkdtemp(prefix="bulwark-check-")
    try:
        path = os.path.join(d, "bulwark.yaml")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([BULWARK, "--check", "-c", path], capture_output=True, text=True, timeout=20)
        return path, p.returncode, p.stdout, p.stderr
    finally:
        shutil.rmtree(d, True)


@unittest.skipUnless(HAVE_OPENSSL, "needs the openssl command to make test certificates")
class TlsUpstreamTest(unittest.TestCase):
    """Each test starts its own backend and bulwark (start()); tearDown stops both and checks
    that bulwark exited cleanly."""

    def setUp(self):
        self.pki = pki()
        self.proxy = None
        self.backend = None

    def tearDown(self):
        code = self.proxy.stop() if self.proxy else 0
        if self.backend:
            self.backend.stop()
        if self.proxy:
            self.assertEqual(code, 0, self.proxy.stderr_text()[-3000:])

    def start(self, server_cert, server_key, /, client_ca=None, tls_max=None, pool="",
              host="localhost", **tls):
        """A backend serving `server_cert`/`server_key` (requiring client certificates from
        `client_ca` if given) and a bulwark whose upstream `secure` points at it as
        HOST:PORT (`host`) with `tls` as its tls block (`ca` defaults to the test CA; `cert` and
        `key` there are bulwark's client certificate)."""
        self.backend = TlsBackend(server_cert, server_key, client_ca=client_ca, tls_max=tls_max)
        tls.setdefault("ca", self.pki.ca)
        self.proxy = Bulwark(TEMPLATE, endpoint="%s:%d" % (host, self.backend.port),
                             tls=tls_block(**tls), pool=pool)

    def get(self, path="/", **kw):
        return request(self.proxy.port, "GET", path, **kw)

    def get_json(self, path="/"):
        status, h, body = self.get(path)
        self.assertEqual(status, 200, (h, body[:500], self.proxy.stderr_text()[-2000:]))
        return json.loads(body)

    def log_lines(self, *words):
        """The lines of bulwark's log holding every one of `words` (case-insensitive)."""
        return [line for line in self.proxy.stderr_text().splitlines()
                if all(w.lower() in line.lower() for w in words)]

    def assert_handshake_logged(self, reasons):
        """A 'TLS handshake failed' line naming one of `reasons` appears in the log."""
        def found():
            lines = self.log_lines("TLS handshake failed")
            return [l for l in lines if any(r.lower() in l.lower() for r in reasons)]
        try:
            wait_for(found, timeout=3, what="a 'TLS handshake failed' line naming one of %r" % (reasons,))
        except AssertionError as e:
            raise AssertionError("%s\nlog:\n%s" % (e, self.proxy.stderr_text()[-3000:]))


class Success(TlsUpstreamTest):
    def test_get_through_an_https_upstream(self):
        self.start(self.pki.server_cert, self.pki.server_key)
        j = self.get_json("/hello?x=1")
        self.assertEqual(j["method"], "GET")
        self.assertEqual(j["path"], "/hello?x=1")
        self.assertIn(j["tls_version"], ("TLSv1.2", "TLSv1.3"))
        # SNI defaults to the endpoint's host name.
        self.assertEqual(j["sni"], "localhost")
        self.assertEqual(self.backend.sni_seen, ["localhost"])
        self.assertIsNone(j["peer_cn"])  # no client certificate unless configured
        wait_for(lambda: handshakes(self.proxy, "success") >= 1,
                 what="a successful upstream handshake counted")
        self.assertEqual(handshakes(self.proxy, "failure"), 0)

    def test_keep_alive_reuses_one_tls_connection(self):
        self.start(self.pki.server_cert, self.pki.server_key)
        idle = lambda: self.proxy.metric("bulwark_pool_connections", upstream="secure", state="idle")  # noqa: E731
        seen = []
        for i in range(5):
            j = self.get_json("/k%d" % i)
            seen.append((j["connection"], j["request_on_connection"]))
            # The connection goes back to the pool just after the response: wait for it, so
            # that the next request finds it rather than racing it.
            wait_for(lambda: idle() == 1, what="the TLS connection back in the pool")
        self.assertEqual(seen, [(1, n) for n in range(1, 6)])
        stats = self.backend.stats()
        self.assertEqual((stats["connections"], stats["handshakes"]), (1, 1), stats)
        self.assertEqual(handshakes(self.proxy, "success"), 1)

    def test_sessions_are_resumed_on_new_connections(self):
        # max_idle 0: no connection is kept, so every request opens one and handshakes.
        self.start(self.pki.server_cert, self.pki.server_key, pool="    pool: { max_idle: 0 }\n")
        n = 6
        reused = [self.get_json("/r%d" % i)["session_reused"] for i in range(n)]
        stats = self.backend.stats()
        self.assertEqual(stats["handshakes"], n, stats)
        self.assertFalse(reused[0])
        # The first handshake is full; after it the client has a session (a TLS 1.3 ticket
        # arrives with the first response), so at most one more full handshake is allowed.
        self.assertGreaterEqual(stats["resumed"], n - 2, (stats, reused))
        wait_for(lambda: handshakes(self.proxy, "success") >= n,
                 what="%d successful handshakes counted" % n)

    def test_large_bodies_both_ways(self):
        self.start(self.pki.server_cert, self.pki.server_key)
        data = os.urandom(1 << 20)
        status, h, body = request(self.proxy.port, "POST", "/upload", body=data, timeout=30)
        self.assertEqual(status, 200, body[:500])
        j = json.loads(body)
        self.assertEqual((j["method"], j["body_length"], j["body_crc32"]),
                         ("POST", len(data), crc_hex(data)))
        # The same body sent chunked by the client.
        status, h, body = request(self.proxy.port, "POST", "/upload-chunked", body=chunked(data, 65536),
                                  headers={"Transfer-Encoding": "chunked"}, timeout=30)
        self.assertEqual(status, 200, body[:500])
        j = json.loads(body)
        self.assertEqual((j["body_length"], j["body_crc32"]), (len(data), crc_hex(data)))
        # A response of many TLS records.
        size = 3 * 1024 * 1024 + 17
        status, h, body = self.get("/download?size=%d" % size, timeout=30)
        self.assertEqual(status, 200)
        self.assertEqual(len(body), size)
        self.assertEqual(crc_hex(body), crc_hex(pattern(size)))

    def test_ip_literal_endpoint_sends_no_sni_and_checks_the_ip(self):
        # The certificate has IP:127.0.0.1 among its names: verification (on) passes by IP.
        self.start(self.pki.server_cert, self.pki.server_key, host="127.0.0.1")
        j = self.get_json("/ip")
        self.assertIsNone(j["sni"])
        self.assertEqual(self.backend.sni_seen, [None])

    def test_verify_false_accepts_an_untrusted_certificate(self):
        self.start(self.pki.other_cert, self.pki.other_key, verify=False)
        j = self.get_json("/insecure")
        self.assertEqual(j["path"], "/insecure")
        self.assertEqual(j["sni"], "localhost")  # SNI is still sent without verification

    def test_sni_override(self):
        # The backend's certificate names both localhost and other.example (and 127.0.0.1), so
        # verification stays on and passes whichever name the proxy checks (the endpoint's
        # host or the SNI name): the test is about what is sent, and verify: false would hide
        # a regression where the override breaks verification.
        self.start(self.pki.multi_cert, self.pki.multi_key, sni="other.example")
        j = self.get_json("/sni")
        self.assertEqual(j["sni"], "other.example")
        self.assertEqual(self.backend.sni_seen, ["other.example"])

    def test_client_certificate_is_presented(self):
        self.start(self.pki.server_cert, self.pki.server_key, client_ca=self.pki.ca,
                   cert=self.pki.client_cert, key=self.pki.client_key)
        j = self.get_json("/mtls")
        self.assertEqual(j["peer_cn"], "bulwark-client")
        self.assertEqual(self.backend.stats()["handshake_failures"], 0)


class Failures(TlsUpstreamTest):
    def assert_handshake_refused(self, cert, key, reasons):
        self.start(cert, key)
        for i in range(2):
            before = handshakes(self.proxy, "failure")
            status, h, body = self.get("/f%d" % i)
            self.assertEqual(status, 502, body[:500])
            self.assertEqual(h.get("x-bulwark-reason"), "upstream-connect-failure")
            wait_for(lambda: handshakes(self.proxy, "failure") >= before + 1,
                     what="the failed handshake counted")
        self.assertEqual(handshakes(self.proxy, "success"), 0)
        self.assertEqual(self.backend.stats()["requests"], 0)  # nothing was sent to it
        self.assert_handshake_logged(reasons)

    def test_certificate_from_an_unknown_ca(self):
        self.assert_handshake_refused(self.pki.other_cert, self.pki.other_key, UNKNOWN_ISSUER)

    def test_expired_certificate(self):
        self.assert_handshake_refused(self.pki.expired_cert, self.pki.expired_key,
                                      ["certificate has expired"])

    def test_name_mismatch(self):
        # Signed by the trusted CA, valid, but for DNS:wrong.example only; the endpoint is
        # localhost.
        self.assert_handshake_refused(self.pki.wrong_name_cert, self.pki.wrong_name_key,
                                      ["hostname mismatch"])

    def test_client_certificate_required_but_not_configured(self):
        self.start(self.pki.server_cert, self.pki.server_key, client_ca=self.pki.ca)
        status, h, body = self.get("/mtls")
        self.assertEqual(status, 502, body[:500])
        # In TLS 1.3 the client's handshake is complete before the server has checked its
        # (missing) certificate: the server's "certificate required" alert arrives after the
        # request was written. Bulwark still reports it as the handshake failure it is (a
        # connect failure, counted, logged with the alert), not as a reset.
        self.assertEqual(h.get("x-bulwark-reason"), "upstream-connect-failure")
        self.assertEqual(self.backend.stats()["requests"], 0)
        wait_for(lambda: self.backend.stats()["handshake_failures"] >= 1,
                 what="the backend refusing the handshake")
        wait_for(lambda: handshakes(self.proxy, "failure") >= 1, what="the failure counted")
        self.assertEqual(handshakes(self.proxy, "success"), 0)
        # The alert's text, or (when the server's reset took the alert with it) Bulwark's.
        self.assert_handshake_logged(["certificate required", "refuse the client certificate"])

    def test_client_certificate_required_but_not_configured_tls12(self):
        self.start(self.pki.server_cert, self.pki.server_key, client_ca=self.pki.ca,
                   tls_max=ssl.TLSVersion.TLSv1_2)
        status, h, body = self.get("/mtls")
        self.assertEqual(status, 502, body[:500])
        self.assertEqual(h.get("x-bulwark-reason"), "upstream-connect-failure")
        wait_for(lambda: handshakes(self.proxy, "failure") >= 1, what="the failed handshake counted")
        self.assertEqual(self.backend.stats()["requests"], 0)
        wait_for(lambda: self.log_lines("TLS handshake failed"), timeout=3,
                 what="a 'TLS handshake failed' line")


# --check: lines 1-7 are fixed, the tls block starts on line 8 (its keys 6 spaces in).
CHECK_HEAD = ("listeners:\n"
              "  - name: in\n"
              "    listen: 127.0.0.1:8080\n"
              "    routes: [{ name: api, upstream: secure }]\n"
              "upstreams:\n"
              "  - name: secure\n"
              "    endpoints: [localhost:8443]\n")


HEALTH = ("    health_check: { type: http, path: /healthz, interval: 100ms, timeout: 1s,"
          " healthy_threshold: 1, unhealthy_threshold: 1 }\n")


class HealthOverTls(TlsUpstreamTest):
    """Health probes of a TLS upstream speak TLS, with the same trust and name checks as the
    pooled connections: plain HTTP to a TLS port would fail every probe."""

    def health(self, result):
        return sample(self.proxy.metrics(), "bulwark_health_checks_total",
                      upstream="secure", result=result) or 0

    def test_probes_pass_over_tls(self):
        self.start(self.pki.server_cert, self.pki.server_key, pool=HEALTH)
        wait_for(lambda: self.health("success") >= 3, what="three successful TLS probes")
        self.assertEqual(self.health("failure"), 0)
        self.assertEqual(sample(self.proxy.metrics(), "bulwark_endpoint_healthy",
                                upstream="secure"), 1)
        self.assertGreaterEqual(self.backend.stats()["requests"], 3)
        self.assertEqual(self.get_json("/after")["path"], "/after")

    def test_probes_fail_on_an_untrusted_certificate(self):
        self.start(self.pki.other_cert, self.pki.other_key, pool=HEALTH)
        wait_for(lambda: self.health("failure") >= 2, what="failed TLS probes")
        self.assertEqual(self.health("success"), 0)
        wait_for(lambda: sample(self.proxy.metrics(), "bulwark_endpoint_healthy",
                                upstream="secure") == 0, what="the endpoint marked unhealthy")
        self.assertEqual(self.backend.stats()["requests"], 0)


@unittest.skipUnless(HAVE_OPENSSL, "needs the openssl command to make test certificates")
class Check(unittest.TestCase):
    def test_verify_false_is_warned_about(self):
        path, code, out, err = check(CHECK_HEAD + "    tls:\n      verify: false\n")
        self.assertEqual(code, 0, err)
        self.assertEqual(out, "%s: ok\n" % path)
        lines = [l for l in err.splitlines() if l.startswith("warning:")]
        self.assertEqual(len(lines), 1, err)
        # warning: FILE:LINE:COL: key.path: message (test_check_warnings.py); line 9 holds verify.
        self.assertRegex(lines[0], r"^warning: %s:9:\d+: upstreams\[0\]\.tls\.verify: \S" % re.escape(path))

    def test_missing_ca_file_is_an_error_at_its_key(self):
        missing = "/nonexistent/bulwark-test-ca.pem"
        path, code, out, err = check(CHECK_HEAD + "    tls:\n      ca: %s\n" % missing)
        self.assertNotEqual(code, 0, out)
        # FILE:LINE:COL: upstreams[0].tls.ca: message -- line 9 holds `ca:`.
        self.assertRegex(err, r"(?m)^%s:9:\d+: upstreams\[0\]\.tls\.ca: \S" % re.escape(path))

    def test_existing_ca_file_is_fine(self):
        path, code, out, err = check(CHECK_HEAD + "    tls:\n      ca: %s\n" % pki().ca)
        self.assertEqual((code, out, err), (0, "%s: ok\n" % path, ""))

    def test_client_cert_without_key_is_an_error(self):
        # `cert` and `key` go together: both or neither.
        path, code, out, err = check(CHECK_HEAD + "    tls:\n      cert: %s\n" % pki().client_cert)
        self.assertNotEqual(code, 0, out)
        self.assertRegex(err, r"(?m)^%s:\d+:\d+: upstreams\[0\]\.tls(\.cert|\.key)?: \S" % re.escape(path))


if __name__ == "__main__":
    unittest.main()
