"""TLS helpers for integration tests: a throw-away PKI made with the `openssl` command line,
and an HTTPS/1.1 backend (Python's ssl module) that reports what it saw of each request and
each TLS handshake. Standard library only."""
import atexit
import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

OPENSSL = shutil.which("openssl")

_CA_CONF = """
[ ca ]
default_ca = this_ca

[ this_ca ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/issued
serial = {dir}/serial
certificate = {dir}/ca.pem
private_key = {dir}/ca.key
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
email_in_dn = no

[ anything ]
commonName = supplied

[ server ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {san}
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash

[ client ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
subjectKeyIdentifier = hash
"""


def _openssl(*args, cwd=None):
    p = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
    return p.stdout


def _stamp(when):
    """ASN.1 GeneralizedTime as `openssl ca -startdate/-enddate` takes it."""
    return when.strftime("%Y%m%d%H%M%SZ")


class _Ca:
    """A self-signed root (EC P-256) and an `openssl ca` database to sign leaves with.
    `openssl ca` is used (not `x509 -req`) because it takes -startdate/-enddate on every
    OpenSSL version: the expired leaf needs dates in the past."""

    def __init__(self, root, slug, common_name):
        self.dir = os.path.join(root, slug)
        os.makedirs(os.path.join(self.dir, "issued"))
        self.cert = os.path.join(self.dir, "ca.pem")
        self.key = os.path.join(self.dir, "ca.key")
        open(os.path.join(self.dir, "index.txt"), "w").close()
        with open(os.path.join(self.dir, "serial"), "w") as f:
            f.write("%032x\n" % int.from_bytes(os.urandom(15), "big"))
        _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "3650",
                 "-sha256", "-subj", "/CN=%s" % common_name,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-addext", "subjectKeyIdentifier=hash")
        self.serial = 0

    def issue(self, out_dir, name, common_name, san=None, client=False, start=None, end=None):
        """Signs a new EC P-256 key: returns (cert path, key path). `san`: the
        subjectAltName value ("DNS:localhost,IP:127.0.0.1"); `client`: a clientAuth cert with
        no SAN; `start`/`end`: datetimes (UTC) of the validity period (default: yesterday to
        a year from now)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        start = start or now - datetime.timedelta(days=1)
        end = end or now + datetime.timedelta(days=365)
        key = os.path.join(out_dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(out_dir, name + ".pem")
        conf = os.path.join(self.dir, name + ".cnf")
        with open(conf, "w") as f:
            f.write(_CA_CONF.format(dir=self.dir, san=san or "DNS:unused.invalid"))
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", key, "-out", csr, "-subj", "/CN=%s" % common_name)
        _openssl("ca", "-batch", "-config", conf, "-in", csr, "-out", cert, "-notext",
                 "-extensions", "client" if client else "server",
                 "-startdate", _stamp(start), "-enddate", _stamp(end))
        return cert, key


class Pki:
    """A throw-away PKI in a temporary directory (`cleanup()` removes it). Attributes are
    paths of PEM files:
      ca, other_ca                 the roots "Bulwark Test CA" and "Other CA"
      server_cert/_key             CA, DNS:localhost + IP:127.0.0.1
      expired_cert/_key            CA, the same names, valid only for two days a month ago
      other_cert/_key              Other CA, DNS:localhost + IP:127.0.0.1
      wrong_name_cert/_key         CA, DNS:wrong.example only
      multi_cert/_key              CA, DNS:localhost + DNS:other.example + IP:127.0.0.1
      client_cert/_key             CA, CN=bulwark-client, clientAuth (for mTLS)"""

    def __init__(self):
        if not OPENSSL:
            raise RuntimeError("no openssl command")
        self.dir = tempfile.mkdtemp(prefix="bulwark-pki-")
        try:
            self._make()
        except BaseException:
            self.cleanup()
            raise

    def _make(self):
        d = self.dir
        test_ca = _Ca(d, "test-ca", "Bulwark Test CA")
        other_ca = _Ca(d, "other-ca", "Other CA")
        self.ca = os.path.join(d, "ca.pem")
        self.other_ca = os.path.join(d, "other-ca.pem")
        shutil.copy(test_ca.cert, self.ca)
        shutil.copy(other_ca.cert, self.other_ca)
        local = "DNS:localhost,IP:127.0.0.1"
        self.server_cert, self.server_key = test_ca.issue(d, "server", "localhost", local)
        now = datetime.datetime.now(datetime.timezone.utc)
        self.expired_cert, self.expired_key = test_ca.issue(
            d, "expired", "localhost", local,
            start=now - datetime.timedelta(days=30), end=now - datetime.timedelta(days=28))
        self.other_cert, self.other_key = other_ca.issue(d, "other", "localhost", local)
        self.wrong_name_cert, self.wrong_name_key = test_ca.issue(
            d, "wrong-name", "wrong.example", "DNS:wrong.example")
        self.multi_cert, self.multi_key = test_ca.issue(
            d, "multi", "localhost", "DNS:localhost,DNS:other.example,IP:127.0.0.1")
        self.client_cert, self.client_key = test_ca.issue(d, "client", "bulwark-client",
                                                          client=True)

    def cleanup(self):
        shutil.rmtree(self.dir, True)


# --- the HTTPS backend ---------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tls-backend"
    sys_version = ""

    def log_message(self, *args):
        pass

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _answer(self):
        body = self._read_body()
        conn = self.connection
        info = self.server.backend._conn_info(conn)
        info["requests"] += 1
        cert = conn.getpeercert()
        peer_cn = None
        if cert:
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        peer_cn = value
        out = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "tls_version": conn.version(),
            "cipher": conn.cipher()[0] if conn.cipher() else None,
            "session_reused": conn.session_reused,
            "peer_cn": peer_cn,
            "sni": info["sni"],
            "connection": info["id"],
            "request_on_connection": info["requests"],
            "body_length": len(body),
            "body_crc32": "%08x" % (zlib.crc32(body) & 0xFFFFFFFF),
        }
        self.server.backend._count("requests")
        query = parse_qs(urlsplit(self.path).query)
        if "size" in query:  # a large body instead: byte i is i % 251 (harness.pattern)
            n = int(query["size"][0])
            data = (bytes(range(251)) * (n // 251 + 1))[:n]
            content_type = "application/octet-stream"
        else:
            data = json.dumps(out).encode()
            content_type = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False

    def finish_request(self, request, client_address):
        """Runs in the connection's thread: the TLS handshake happens here, not in the accept
        loop, so a client that never completes it blocks nothing else."""
        self.backend._handle(request, client_address, lambda s: self.RequestHandlerClass(s, client_address, self))


class TlsBackend:
    """An HTTPS/1.1 server on 127.0.0.1 (ephemeral port) in a background thread. Every request
    gets 200 and a JSON body: method, path, headers ([name, value] pairs), tls_version,
    session_reused, peer_cn (CN of the client certificate, or None), sni (the server_name the
    client sent, None without SNI), connection (a number per TCP connection),
    request_on_connection, body_length and body_crc32 (harness.crc_hex format). With
    `?size=N` in the path the body is instead N bytes of harness.pattern(N).

    `client_ca`: a PEM file; client certificates are then required (CERT_REQUIRED) and
    verified against it. `tls_max`: an ssl.TLSVersion to cap the protocol (e.g. TLSv1_2)."""

    def __init__(self, cert, key, client_ca=None, tls_max=None, timeout=30):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
        if tls_max:
            ctx.maximum_version = tls_max
        ctx.sni_callback = self._on_sni
        self.context = ctx
        self.timeout = timeout
        self._lock = threading.Lock()
        self._stats = {"connections": 0, "handshakes": 0, "resumed": 0, "handshake_failures": 0,
                       "requests": 0}
        self._sni = {}        # id(ssl socket) -> server_name, filled in during the handshake
        self._info = {}       # id(ssl socket) -> per-connection record
        self._open = set()    # sockets to close on stop()
        self.sni_seen = []    # server_name of each completed handshake, in order
        self.handshake_errors = []  # str() of each failed handshake
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.backend = self
        self.port = self.server.server_address[1]
        self.address = "127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def _on_sni(self, ssl_obj, server_name, ctx):
        with self._lock:
            self._sni[id(ssl_obj)] = server_name
        return None

    def _count(self, key, n=1):
        with self._lock:
            self._stats[key] += n

    def _conn_info(self, ssl_sock):
        with self._lock:
            return self._info[id(ssl_sock)]

    def _handle(self, raw, client_address, serve):
        raw.settimeout(self.timeout)
        self._count("connections")
        with self._lock:
            self._open.add(raw)
            conn_id = self._stats["connections"]
        ssl_sock = None
        try:
            try:
                ssl_sock = self.context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as e:
                with self._lock:
                    self._stats["handshake_failures"] += 1
                    self.handshake_errors.append(str(e))
                return
            with self._lock:
                self._open.discard(raw)
                self._open.add(ssl_sock)
                sni = self._sni.pop(id(ssl_sock), None)
                self._stats["handshakes"] += 1
                if ssl_sock.session_reused:
                    self._stats["resumed"] += 1
                self.sni_seen.append(sni)
                self._info[id(ssl_sock)] = {"id": conn_id, "sni": sni, "requests": 0}
            try:
                serve(ssl_sock)
            except (ssl.SSLError, OSError):
                pass  # the peer went away mid-request
        finally:
            with self._lock:
                self._open.discard(raw)
                if ssl_sock is not None:
                    self._open.discard(ssl_sock)
                    self._info.pop(id(ssl_sock), None)
                    self._sni.pop(id(ssl_sock), None)
            for s in (ssl_sock, raw):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def stats(self):
        """Counts so far: connections (TCP accepted), handshakes (completed), resumed
        (completed with a resumed session), handshake_failures, requests; and open (TLS
        connections open now)."""
        with self._lock:
            out = dict(self._stats)
            out["open"] = len(self._info)
            return out

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            socks = list(self._open)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)


if __name__ == "__main__":
    # Manual use: python3 tls_backend.py -> makes a PKI, serves with the good cert, prints paths.
    import time
    pki = Pki()
    backend = TlsBackend(pki.server_cert, pki.server_key)
    print("PKI", pki.dir)
    print("PORT", backend.port, flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        backend.stop()
        pki.cleanup()


_shared_pki = None


def pki():
    """One throw-away PKI per test process, made on first use (a skipped module never calls
    openssl) and removed at exit."""
    global _shared_pki
    if _shared_pki is None:
        _shared_pki = Pki()
        atexit.register(_shared_pki.cleanup)
    return _shared_pki
