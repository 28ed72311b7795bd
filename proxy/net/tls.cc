#include "net/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

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

bool is_ip_literal(const std::string& name) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
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
  if (!config.cert.empty()) {
    if (std::string why = unreadable(config.cert); !why.empty()) {
      error = "cert: " + why;
      return nullptr;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, config.cert.c_str()) != 1) {
      error = "cert: cannot load a certificate chain from '" + config.cert + "': " +
              take_ssl_error("not a PEM certificate");
      return nullptr;
    }
    if (std::string why = unreadable(config.key); !why.empty()) {
      error = "key: " + why;
      return nullptr;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, config.key.c_str(), SSL_FILETYPE_PEM) != 1) {
      error = "key: cannot load a private key from '" + config.key + "': " +
              take_ssl_error("not a PEM private key");
      return nullptr;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      error = "key: '" + config.key + "' does not match the certificate '" + config.cert + "'";
      ERR_clear_error();
      return nullptr;
    }
  }
  static const unsigned char kAlpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof kAlpn - 1);
  // Sessions (TLS 1.3 tickets arrive after the handshake) go to each connection's sink, which
  // keeps them per pool: a refill of the pool resumes instead of paying full handshakes.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
  return out;
}

TlsClientContext::~TlsClientContext() { SSL_CTX_free(ctx_); }

std::string check_upstream_tls_files(const UpstreamTlsConfig& config) {
  std::string error;
  return TlsClientContext::create(config, error) ? std::string() : error;
}

TlsSession::~TlsSession() {
  if (ssl_) SSL_free(ssl_);  // frees both BIOs
}

bool TlsSession::start_client(const TlsClientContext& context, const std::string& server_name,
                              SSL_SESSION* resume, TlsSessionSink sink) {
  ERR_clear_error();
  ssl_ = SSL_new(context.ctx());
  if (!ssl_) {
    error_ = "cannot make a TLS connection: " + take_ssl_error("out of memory");
    return false;
  }
  rbio_ = BIO_new(BIO_s_mem());
  wbio_ = BIO_new(BIO_s_mem());
  if (!rbio_ || !wbio_) {
    BIO_free(rbio_);  // BIO_free(nullptr) is a no-op
    BIO_free(wbio_);
    rbio_ = wbio_ = nullptr;
    SSL_free(ssl_);
    ssl_ = nullptr;
    error_ = "cannot make a TLS connection: " + take_ssl_error("out of memory");
    return false;
  }
  SSL_set_bio(ssl_, rbio_, wbio_);
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

void TlsSession::feed(const char* data, std::size_t len) {
  BIO_write(rbio_, data, static_cast<int>(len));
}

TlsSession::Result TlsSession::handshake() {
  if (handshake_done_) return Result::done;
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

void TlsSession::drop_output() { (void)BIO_reset(wbio_); }

void TlsSession::set_error(int ssl_result) {
  long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) {
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
