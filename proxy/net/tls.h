// TLS on libssl (OpenSSL 3) over memory BIOs: the event loop moves ciphertext between the
// socket and a TlsSession; OpenSSL never touches a socket, so nothing blocks the loop.
//
// TlsClientContext: one SSL_CTX per upstream with a `tls` block, shared by every worker
// (OpenSSL makes SSL objects from one context on several threads safely): trust store
// (the OS bundle or a file, read once when the context is made, never at handshake time),
// optional client certificate, ALPN, TLS 1.2 at least, and a client session cache whose
// sessions go to the caller (new_session) instead of OpenSSL's internal store.
//
// TlsSession: one connection's SSL with a memory BIO each way. feed() takes ciphertext read
// from the socket; handshake()/read()/write() drive OpenSSL; output() is the ciphertext to
// send, drop_output() discards it once sent or queued.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "config/config.h"
#include "net/write_queue.h"

namespace bulwark {

class TlsClientContext {
 public:
  // Null with `error` set when a file cannot be read or the key does not match.
  static std::shared_ptr<TlsClientContext> create(const UpstreamTlsConfig& config,
                                                  std::string& error);
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;

  SSL_CTX* ctx() const { return ctx_; }
  const UpstreamTlsConfig& config() const { return config_; }

 private:
  TlsClientContext(SSL_CTX* ctx, UpstreamTlsConfig config) : ctx_(ctx), config_(std::move(config)) {}
  SSL_CTX* ctx_;
  UpstreamTlsConfig config_;
};

// One SSL_CTX per listener with a tls block, shared by the workers: certificate chain and
// key, TLS 1.2 (or 1.3) at least, Mozilla's "intermediate" cipher list for TLS 1.2, ALPN
// (h2 and/or http/1.1, from the listener's protocols), session tickets, and client certificates required when client_ca is set.
class TlsServerContext {
 public:
  // Null with `error` ("cert: why", "key: why", "client_ca: why") when a file cannot be used.
  static std::shared_ptr<TlsServerContext> create(const ListenerTlsConfig& config,
                                                  std::string& error);
  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  SSL_CTX* ctx() const { return ctx_; }
  // The certificate's notAfter, Unix seconds (bulwark_tls_certificate_expiry_seconds).
  std::int64_t not_after() const { return not_after_; }
  const std::string& subject() const { return subject_; }
  // The ALPN protocols offered, in wire format, most preferred first.
  const std::string& alpn() const { return alpn_; }

 private:
  explicit TlsServerContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
  std::string alpn_;
  std::int64_t not_after_ = 0;
  std::string subject_;
};

// Receives the sessions (tickets) a server issues on a connection made with
// TlsSession::start_client, to resume later connections: takes a reference (SSL_SESSION_free
// when done with it).
using TlsSessionSink = std::function<void(SSL_SESSION*)>;

class TlsSession {
 public:
  TlsSession() = default;
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // Client side. `server_name`: the SNI (none when empty or an IP address), and the name the
  // certificate must carry when the context verifies (an IP address is matched as one).
  // `resume`: a session from an earlier connection, or null. `sink` gets new sessions.
  bool start_client(const TlsClientContext& context, const std::string& server_name,
                    SSL_SESSION* resume, TlsSessionSink sink);

  // Server side (a listener's connection).
  bool start_server(const TlsServerContext& context);

  enum class Result { done, want, closed, error };
  // Ciphertext from the socket.
  void feed(const char* data, std::size_t len);
  // Advances the handshake: done, want (send output() and wait for more input), or error.
  Result handshake();
  bool handshake_done() const { return handshake_done_; }
  bool resumed() const;
  // The protocol ALPN chose ("h2", "http/1.1"), or empty.
  std::string_view alpn_protocol() const;
  // Decrypted bytes into `buf`: n > 0; 0 with `result` want (needs more input), closed (the
  // peer's close_notify) or error.
  std::size_t read(char* buf, std::size_t cap, Result& result);
  // Decrypts all the input fed so far and hands it to `handle(data, len)` in batches of up
  // to kReadBufferSize bytes, from one per-thread buffer that is reused once `handle`
  // returns (so, as after a plain read, what `handle` borrowed must be flushed by then).
  // `handle` returns false to stop (its connection closed): then `done`. Otherwise: want
  // (everything read), closed (the peer's close_notify) or error.
  template <typename Handle>
  Result drain(Handle&& handle);
  // Encrypts `len` plaintext bytes into the output. False on error.
  bool write(const char* data, std::size_t len);
  // Queues a close_notify.
  void shutdown();
  // The ciphertext waiting to be sent, contiguous.
  std::string_view output() const;
  void drop_output();
  // After drain(): an emptied input buffer that grew large is given back.
  void trim_input();
  int version() const { return ssl_ ? SSL_version(ssl_) : 0; }
  // After an error: why, in words ("certificate has expired", "hostname mismatch", ...).
  const std::string& error() const { return error_; }

 private:
  bool make(SSL_CTX* ctx);  // the SSL and its two memory BIOs
  void set_error(int ssl_result);
  SSL* ssl_ = nullptr;
  BIO* rbio_ = nullptr;  // ciphertext in (owned by ssl_)
  BIO* wbio_ = nullptr;  // ciphertext out (owned by ssl_)
  bool handshake_done_ = false;
  TlsSessionSink sink_;
  std::string error_;
};

// A plaintext buffer of kReadBufferSize bytes per thread, for decrypted reads (the worker's
// read buffer holds the ciphertext they came from).
char* tls_plain_buffer();

template <typename Handle>
TlsSession::Result TlsSession::drain(Handle&& handle) {
  char* plain = tls_plain_buffer();
  std::size_t used = 0;
  for (;;) {
    Result r;
    std::size_t n = read(plain + used, kReadBufferSize - used, r);
    used += n;
    if (n > 0 && used < kReadBufferSize) continue;
    if (used > 0) {
      if (!handle(static_cast<const char*>(plain), used)) return Result::done;
      used = 0;
    }
    if (n == 0) {  // else the buffer was full: there may be more
      trim_input();
      return r;
    }
  }
}

}  // namespace bulwark
