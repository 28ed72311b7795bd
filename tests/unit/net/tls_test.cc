// TlsSession over memory only: a client and a server session exchange their output() by
// hand, as the event loop would through a socket. Certificates are made here with OpenSSL (a
// CA, a leaf for localhost signed by it, a leaf for another name), written to a temporary
// directory for the contexts to load.
#include "net/tls.h"

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace bulwark {
namespace {

EVP_PKEY* make_key() { return EVP_EC_gen("P-256"); }

X509* make_cert(EVP_PKEY* key, const char* cn, const char* san, X509* issuer, EVP_PKEY* issuer_key,
                long serial) {
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer ? issuer : x, x, nullptr, nullptr, 0);
  auto add = [&](int nid, const char* value) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    REQUIRE(ext);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  };
  if (san) {
    add(NID_subject_alt_name, san);
    add(NID_basic_constraints, "critical,CA:FALSE");
  } else {
    add(NID_basic_constraints, "critical,CA:TRUE");
    add(NID_key_usage, "critical,keyCertSign,cRLSign");
  }
  REQUIRE(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
  return x;
}

struct Pki {
  std::string dir;
  std::string ca, leaf, leaf_key, other, other_key;

  Pki() {
    char tmpl[] = "/tmp/bulwark-tls-unit-XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    dir = tmpl;
    EVP_PKEY* ca_key = make_key();
    X509* ca_cert = make_cert(ca_key, "unit CA", nullptr, nullptr, nullptr, 1);
    EVP_PKEY* k1 = make_key();
    X509* c1 = make_cert(k1, "localhost", "DNS:localhost,IP:127.0.0.1", ca_cert, ca_key, 2);
    EVP_PKEY* k2 = make_key();
    X509* c2 = make_cert(k2, "other", "DNS:other.example", ca_cert, ca_key, 3);
    ca = write_cert("ca.pem", ca_cert);
    leaf = write_cert("leaf.pem", c1);
    leaf_key = write_key("leaf.key", k1);
    other = write_cert("other.pem", c2);
    other_key = write_key("other.key", k2);
    for (X509* x : {ca_cert, c1, c2}) X509_free(x);
    for (EVP_PKEY* k : {ca_key, k1, k2}) EVP_PKEY_free(k);
  }
  ~Pki() {
    for (const auto& f : {ca, leaf, leaf_key, other, other_key}) std::remove(f.c_str());
    rmdir(dir.c_str());
  }
  std::string write_cert(const char* name, X509* x) {
    std::string path = dir + "/" + name;
    FILE* f = std::fopen(path.c_str(), "w");
    PEM_write_X509(f, x);
    std::fclose(f);
    return path;
  }
  std::string write_key(const char* name, EVP_PKEY* k) {
    std::string path = dir + "/" + name;
    FILE* f = std::fopen(path.c_str(), "w");
    PEM_write_PrivateKey(f, k, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(f);
    return path;
  }
};

// Moves each side's output to the other until neither has anything to send; then reports
// whether both handshakes are done.
bool pump(TlsSession& client, TlsSession& server, TlsSession::Result& cr, TlsSession::Result& sr) {
  for (int i = 0; i < 20; ++i) {
    cr = client.handshake();
    std::string c(client.output());
    client.drop_output();
    if (!c.empty()) server.feed(c.data(), c.size());
    sr = server.handshake();
    std::string s(server.output());
    server.drop_output();
    if (!s.empty()) client.feed(s.data(), s.size());
    if (c.empty() && s.empty()) break;
  }
  return client.handshake_done() && server.handshake_done();
}

std::string read_all(TlsSession& s) {
  std::string out;
  char buf[4096];
  TlsSession::Result r;
  while (std::size_t n = s.read(buf, sizeof buf, r)) out.append(buf, n);
  return out;
}

void transfer(TlsSession& from, TlsSession& to) {
  std::string bytes(from.output());
  from.drop_output();
  to.feed(bytes.data(), bytes.size());
}

}  // namespace

TEST_CASE("tls: a verified handshake over memory, then data both ways") {
  Pki pki;
  std::string error;
  ListenerTlsConfig lc;
  lc.cert = pki.leaf;
  lc.key = pki.leaf_key;
  auto server_ctx = TlsServerContext::create(lc, error);
  REQUIRE_MESSAGE(server_ctx, error);
  CHECK(server_ctx->not_after() > 0);
  UpstreamTlsConfig uc;
  uc.ca = pki.ca;
  auto client_ctx = TlsClientContext::create(uc, error);
  REQUIRE_MESSAGE(client_ctx, error);

  int sessions = 0;
  SSL_SESSION* saved = nullptr;
  TlsSessionSink sink = [&](SSL_SESSION* s) {
    ++sessions;
    if (saved) SSL_SESSION_free(saved);
    saved = s;
  };
  {
    TlsSession client, server;
    REQUIRE(client.start_client(*client_ctx, "localhost", nullptr, sink));
    REQUIRE(server.start_server(*server_ctx));
    TlsSession::Result cr, sr;
    REQUIRE(pump(client, server, cr, sr));
    CHECK_FALSE(client.resumed());

    const std::string request = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    REQUIRE(client.write(request.data(), request.size()));
    transfer(client, server);
    CHECK(read_all(server) == request);
    std::string big(100000, 'x');
    REQUIRE(server.write(big.data(), big.size()));
    transfer(server, client);  // also carries the TLS 1.3 session tickets
    CHECK(read_all(client) == big);
    CHECK(sessions >= 1);

    server.shutdown();
    transfer(server, client);
    TlsSession::Result r;
    char buf[16];
    CHECK(client.read(buf, sizeof buf, r) == 0);
    CHECK(r == TlsSession::Result::closed);
    // A connection freed without its own close_notify has its session marked not resumable
    // by OpenSSL (UpstreamConnection::close sends one for that reason too).
    client.shutdown();
    CHECK(SSL_SESSION_is_resumable(saved) == 1);
  }
  SUBCASE("a new connection resumes the session the server issued") {
    REQUIRE(saved);
    TlsSession client, server;
    REQUIRE(client.start_client(*client_ctx, "localhost", saved, sink));
    REQUIRE(server.start_server(*server_ctx));
    TlsSession::Result cr, sr;
    REQUIRE(pump(client, server, cr, sr));
    CHECK(client.resumed());
    CHECK(server.resumed());
  }
  SUBCASE("the name is checked: a certificate for another name is refused") {
    TlsSession client, server;
    REQUIRE(client.start_client(*client_ctx, "other.example", nullptr, nullptr));
    REQUIRE(server.start_server(*server_ctx));
    TlsSession::Result cr, sr;
    CHECK_FALSE(pump(client, server, cr, sr));
    CHECK(cr == TlsSession::Result::error);
    CHECK(client.error() == "hostname mismatch");
  }
  SUBCASE("an IP address is matched as one, and sends no SNI") {
    TlsSession client, server;
    REQUIRE(client.start_client(*client_ctx, "127.0.0.1", nullptr, nullptr));
    REQUIRE(server.start_server(*server_ctx));
    TlsSession::Result cr, sr;
    CHECK(pump(client, server, cr, sr));
  }
  SUBCASE("verify: false accepts a certificate for another name") {
    UpstreamTlsConfig loose;
    loose.verify = false;
    auto loose_ctx = TlsClientContext::create(loose, error);
    REQUIRE(loose_ctx);
    TlsSession client, server;
    REQUIRE(client.start_client(*loose_ctx, "other.example", nullptr, nullptr));
    REQUIRE(server.start_server(*server_ctx));
    TlsSession::Result cr, sr;
    CHECK(pump(client, server, cr, sr));
  }
  if (saved) SSL_SESSION_free(saved);
}

TEST_CASE("tls: contexts refuse files that cannot serve") {
  Pki pki;
  std::string error;
  ListenerTlsConfig lc;
  lc.cert = pki.leaf;
  lc.key = pki.other_key;
  CHECK_FALSE(TlsServerContext::create(lc, error));
  CHECK(error.rfind("key: ", 0) == 0);
  CHECK(error.find("does not match the certificate") != std::string::npos);
  lc.key = pki.dir + "/missing.key";
  CHECK_FALSE(TlsServerContext::create(lc, error));
  CHECK(error.rfind("key: cannot read", 0) == 0);
  lc.key = pki.leaf_key;
  lc.client_ca = pki.leaf_key;  // not a certificate
  CHECK_FALSE(TlsServerContext::create(lc, error));
  CHECK(error.rfind("client_ca: ", 0) == 0);

  UpstreamTlsConfig uc;
  uc.ca = pki.dir + "/missing.pem";
  CHECK_FALSE(TlsClientContext::create(uc, error));
  CHECK(error.rfind("ca: cannot read", 0) == 0);
  uc.ca = pki.ca;
  uc.cert = pki.other;
  uc.key = pki.leaf_key;
  CHECK_FALSE(TlsClientContext::create(uc, error));
  CHECK(error.find("does not match") != std::string::npos);
}

}  // namespace bulwark
