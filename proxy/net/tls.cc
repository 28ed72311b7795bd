#include "net/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "net/write_queue.h"

namespace bulwark {
namespace {

// The reason of the newest error in this thread's OpenSSL error queue ("wrong version
// number", "tlsv1 alert unknown ca"), then the queue is cleared: errors must not linger for
// the next connection served by the thread.
std::string take_ssl_error(const char* fallback) {
  unsigned long code = ERR_peek_last_error();
  std::string out = fallback;
  if (code != 0) {
    const char* reason = ERR_reason_error_string(code);
    if (reason) {
      out = reason;
    } else {
      char buf[256];
      ERR_error_string_n(code, buf, sizeof buf);
      out = buf;
    }
  }
  ERR_clear_error();
  return out;
}

// Why a file cannot be read, or "" when it can: clearer than OpenSSL's own message.
std::string unreadable(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return "cannot read '" + path + "': " + std::strerror(errno);
  std::fclose(f);
  return "";
}

bool file_contains(const std::string& path, const char* needle) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  std::string text(64 * 1024, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), f));
  std::fclose(f);
  return text.find(needle) != std::string::npos;
}

// A memory BIO keeps the largest size it ever held. One that once carried a large transfer
// and is empty now is replaced, so an idle keep-alive connection does not keep it.
constexpr std::size_t kKeepBioBytes = 32 * 1024;
bool oversized_and_empty(BIO* bio) {
  BUF_MEM* mem = nullptr;
  BIO_get_mem_ptr(bio, &mem);
  return mem && mem->max > kKeepBioBytes && BIO_ctrl_pending(bio) == 0;
}

bool is_ip_literal(const std::string& name) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

// Loads a certificate chain and its key into `ctx`. False with `error` ("cert: why" or
// "key: why").
bool load_cert_and_key(SSL_CTX* ctx, const std::string& cert, const std::string& key,
                       std::string& error) {
  // A passphrase-protected key must fail, not prompt on the terminal (which would block).
  SSL_CTX_set_default_passwd_cb(ctx, [](char*, int, int, void*) { return 0; });
  if (std::string why = unreadable(cert); !why.empty()) {
    error = "cert: " + why;
    return false;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    error = "cert: cannot load a certificate chain from '" + cert + "': " +
            take_ssl_error("not a PEM certificate");
    return false;
  }
  if (std::string why = unreadable(key); !why.empty()) {
    error = "key: " + why;
    return false;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    unsigned long code = ERR_peek_last_error();
    if (ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH ||
        ERR_GET_REASON(code) == SSL_R_PRIVATE_KEY_MISMATCH) {
      ERR_clear_error();
      error = "key: '" + key + "' does not match the certificate '" + cert + "'";
    } else if (file_contains(key, "ENCRYPTED")) {
      ERR_clear_error();
      error = "key: '" + key + "' is encrypted (a passphrase-protected key is not supported)";
    } else {
      error = "key: cannot load a private key from '" + key + "': " +
              take_ssl_error("not a PEM private key");
    }
    return false;
  }
  return true;
}

int new_session_cb(SSL* ssl, SSL_SESSION* session) {
  auto* sink = static_cast<TlsSessionSink*>(SSL_get_app_data(ssl));
  if (!sink || !*sink) return 0;
  (*sink)(session);  // takes the reference OpenSSL gives us
  return 1;
}

}  // namespace

std::shared_ptr<TlsClientContext> TlsClientContext::create(const UpstreamTlsConfig& config,
                                                          std::string& error) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    error = "cannot make a TLS context: " + take_ssl_error("out of memory");
    return nullptr;
  }
  std::shared_ptr<TlsClientContext> out(new TlsClientContext(ctx, config));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  if (config.verify) {
    // The trust store is read now, once: at handshake time OpenSSL then reads no file (a
    // hashed certificate directory would be read on the loop, per handshake).
    std::string ca = config.ca == "system" ? X509_get_default_cert_file() : config.ca;
    if (std::string why = unreadable(ca); !why.empty()) {
      error = "ca: " + why;
      return nullptr;
    }
    if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
      error = "ca: no certificate could be loaded from '" + ca + "': " +
              take_ssl_error("not a PEM certificate bundle");
      return nullptr;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!config.cert.empty() && !load_cert_and_key(ctx, config.cert, config.key, error))
    return nullptr;
  static const unsigned char kAlpnHttp1[] = "\x08http/1.1";
  static const unsigned char kAlpnH2[] = "\x02h2";
  if (config.alpn_h2)
    SSL_CTX_set_alpn_protos(ctx, kAlpnH2, sizeof kAlpnH2 - 1);
  else
    SSL_CTX_set_alpn_protos(ctx, kAlpnHttp1, sizeof kAlpnHttp1 - 1);
  // Sessions (TLS 1.3 tickets arrive after the handshake) go to each connection's sink, which
  // keeps them per pool: a refill of the pool resumes instead of paying full handshakes.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
  return out;
}

TlsClientContext::~TlsClientContext() { SSL_CTX_free(ctx_); }

namespace {

// Mozilla's "intermediate" configuration for TLS 1.2 (TLS 1.3 suites are OpenSSL's
// defaults, all of them modern): forward secrecy and AEAD only, the client's order.
constexpr const char* kIntermediateCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";

// ALPN: the listener's protocols in Bulwark's order of preference (h2, then http/1.1) among
// those the client offers; when none is common, no ALPN at all (a client offering only h2
// learns that HTTP/2 is not spoken here and may fall back).
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void* arg) {
  auto* server = static_cast<const TlsServerContext*>(arg);
  const std::string& ours = server->alpn();
  unsigned char* chosen = nullptr;
  if (ours.empty() ||
      SSL_select_next_proto(&chosen, outlen, reinterpret_cast<const unsigned char*>(ours.data()),
                            static_cast<unsigned>(ours.size()), in, inlen) !=
          OPENSSL_NPN_NEGOTIATED) {
    // An HTTP/2-only listener and a client that offers other protocols: refused with the
    // no_application_protocol alert (RFC 7301 3.2). A client without ALPN is let through and
    // refused after the handshake.
    if (ours == std::string_view("\x02h2", 3)) return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

}  // namespace

std::shared_ptr<TlsServerContext> TlsServerContext::create(const ListenerTlsConfig& config,
                                                          std::string& error) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    error = "cannot make a TLS context: " + take_ssl_error("out of memory");
    return nullptr;
  }
  std::shared_ptr<TlsServerContext> out(new TlsServerContext(ctx));
  SSL_CTX_set_min_proto_version(ctx, config.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_cipher_list(ctx, kIntermediateCiphers);
  // An idle keep-alive connection gives its record buffers back (about 30 KiB each).
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (!load_cert_and_key(ctx, config.cert, config.key, error)) return nullptr;
  if (!config.client_ca.empty()) {
    if (std::string why = unreadable(config.client_ca); !why.empty()) {
      error = "client_ca: " + why;
      return nullptr;
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(config.client_ca.c_str());
    if (!names || SSL_CTX_load_verify_locations(ctx, config.client_ca.c_str(), nullptr) != 1) {
      if (names) sk_X509_NAME_pop_free(names, X509_NAME_free);
      error = "client_ca: no certificate could be loaded from '" + config.client_ca + "': " +
              take_ssl_error("not a PEM certificate bundle");
      return nullptr;
    }
    SSL_CTX_set_client_CA_list(ctx, names);  // takes ownership
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  // Resumption (tickets; and the session id context that resuming with client certificates
  // requires).
  static const unsigned char kContext[] = "bulwark";
  SSL_CTX_set_session_id_context(ctx, kContext, sizeof kContext - 1);
  // Tickets only: the server-side session cache is one lock shared by every worker.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (config.alpn_h2) out->alpn_.append("\x02h2", 3);
  if (config.alpn_http1) out->alpn_.append("\x08http/1.1", 9);
  SSL_CTX_set_alpn_select_cb(ctx, select_alpn, out.get());
  if (X509* leaf = SSL_CTX_get0_certificate(ctx)) {
    std::tm tm{};
    if (ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) == 1) out->not_after_ = timegm(&tm);
    char name[256];
    X509_NAME_oneline(X509_get_subject_name(leaf), name, sizeof name);
    out->subject_ = name;
  }
  ERR_clear_error();
  return out;
}

TlsServerContext::~TlsServerContext() { SSL_CTX_free(ctx_); }

std::string_view TlsSession::alpn_protocol() const {
  const unsigned char* p = nullptr;
  unsigned int n = 0;
  if (ssl_) SSL_get0_alpn_selected(ssl_, &p, &n);
  return p ? std::string_view(reinterpret_cast<const char*>(p), n) : std::string_view();
}

TlsSession::~TlsSession() {
  if (ssl_) SSL_free(ssl_);  // frees both BIOs
}

bool TlsSession::start_client(const TlsClientContext& context, const std::string& server_name,
                              SSL_SESSION* resume, TlsSessionSink sink) {
  if (!make(context.ctx())) return false;
  SSL_set_connect_state(ssl_);
  sink_ = std::move(sink);
  SSL_set_app_data(ssl_, &sink_);
  bool ip = is_ip_literal(server_name);
  if (!server_name.empty() && !ip) SSL_set_tlsext_host_name(ssl_, server_name.c_str());
  if (context.config().verify && !server_name.empty()) {
    if (ip)
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), server_name.c_str());
    else
      SSL_set1_host(ssl_, server_name.c_str());
  }
  if (resume) SSL_set_session(ssl_, resume);
  return true;
}

bool TlsSession::make(SSL_CTX* ctx) {
  ERR_clear_error();
  ssl_ = SSL_new(ctx);
  rbio_ = BIO_new(BIO_s_mem());
  wbio_ = BIO_new(BIO_s_mem());
  if (!ssl_ || !rbio_ || !wbio_) {
    BIO_free(rbio_);  // BIO_free(nullptr) and SSL_free(nullptr) are no-ops
    BIO_free(wbio_);
    SSL_free(ssl_);
    ssl_ = nullptr;
    rbio_ = wbio_ = nullptr;
    error_ = "cannot make a TLS connection: " + take_ssl_error("out of memory");
    return false;
  }
  SSL_set_bio(ssl_, rbio_, wbio_);  // ssl_ owns both from here
  return true;
}

bool TlsSession::start_server(const TlsServerContext& context) {
  if (!make(context.ctx())) return false;
  SSL_set_accept_state(ssl_);
  return true;
}

void TlsSession::feed(const char* data, std::size_t len) {
  BIO_write(rbio_, data, static_cast<int>(len));
}

TlsSession::Result TlsSession::handshake() {
  if (handshake_done_) return Result::done;
  if (!error_.empty()) return Result::error;  // sticky: the first error is the reason
  ERR_clear_error();
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    handshake_done_ = true;
    return Result::done;
  }
  int e = SSL_get_error(ssl_, rc);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return Result::want;
  set_error(rc);
  return Result::error;
}

bool TlsSession::resumed() const { return ssl_ && SSL_session_reused(ssl_) == 1; }

std::size_t TlsSession::read(char* buf, std::size_t cap, Result& result) {
  std::size_t n = 0;
  ERR_clear_error();
  int rc = SSL_read_ex(ssl_, buf, cap, &n);
  if (rc == 1) {
    result = Result::done;
    return n;
  }
  int e = SSL_get_error(ssl_, rc);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    result = Result::want;
  } else if (e == SSL_ERROR_ZERO_RETURN) {
    result = Result::closed;
  } else {
    set_error(rc);
    result = Result::error;
  }
  return 0;
}

bool TlsSession::write(const char* data, std::size_t len) {
  if (len == 0) return true;
  std::size_t n = 0;
  if (SSL_write_ex(ssl_, data, len, &n) == 1 && n == len) return true;
  set_error(0);
  return false;
}

void TlsSession::shutdown() {
  if (ssl_ && handshake_done_) {
    SSL_shutdown(ssl_);
    ERR_clear_error();
  }
}

std::string_view TlsSession::output() const {
  char* data = nullptr;
  long n = BIO_get_mem_data(wbio_, &data);
  return n > 0 ? std::string_view(data, static_cast<std::size_t>(n)) : std::string_view();
}

void TlsSession::drop_output() {
  (void)BIO_reset(wbio_);
  if (oversized_and_empty(wbio_)) {
    if (BIO* fresh = BIO_new(BIO_s_mem())) {
      SSL_set0_wbio(ssl_, fresh);  // frees the old one
      wbio_ = fresh;
    }
  }
}

void TlsSession::trim_input() {
  if (!oversized_and_empty(rbio_)) return;
  if (BIO* fresh = BIO_new(BIO_s_mem())) {
    SSL_set0_rbio(ssl_, fresh);
    rbio_ = fresh;
  }
}

void TlsSession::set_error(int ssl_result) {
  unsigned long code = ERR_peek_last_error();
  long verify = SSL_get_verify_result(ssl_);
  if (ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED &&
      verify != X509_V_OK) {
    error_ = X509_verify_cert_error_string(verify);
    ERR_clear_error();
    return;
  }
  int e = SSL_get_error(ssl_, ssl_result);
  const char* fallback = e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN
                             ? "the peer closed the connection"
                             : "TLS error";
  error_ = take_ssl_error(fallback);
}

char* tls_plain_buffer() {
  thread_local std::unique_ptr<char[]> buffer;
  if (!buffer) buffer.reset(new char[kReadBufferSize]);
  return buffer.get();
}

}  // namespace bulwark
