// UpstreamConnection's TLS (an upstream with a tls block): the handshake after the TCP
// connect, ciphertext in, and a handshake failure reported as the connect failure it is.
#include "net/tls.h"
#include "upstream/connection.h"
#include "upstream/pool.h"

namespace bulwark {

void UpstreamConnection::start_tls() {
  tls_ = std::make_unique<TlsSession>();
  const TlsClientContext* context = pool_.tls();
  if (!context) {
    tls_failed("the upstream's TLS context could not be made (see the error logged before)");
    return;
  }
  ConnectionPool* pool = &pool_;
  if (!tls_->start_client(*context, context->config().sni.empty() ? pool_.server_name()
                                                                   : context->config().sni,
                          pool_.tls_session(),
                          [pool](SSL_SESSION* s) { pool->set_tls_session(s); })) {
    tls_failed(tls_->error());
    return;
  }
  tls_input(nullptr, 0);  // sends the ClientHello
}

void UpstreamConnection::tls_failed(const std::string& reason, UpstreamError error) {
  pool_.stats().tls_handshakes[1].add();
  pool_.log_tls_failure(reason);
  fail(error);
}

void UpstreamConnection::tls_input(const char* data, std::size_t len) {
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  if (len > 0) tls_->feed(data, len);
  if (!tls_->handshake_done()) {
    TlsSession::Result r = tls_->handshake();
    if (r == TlsSession::Result::error) {
      send_tls_output(*tls_, stream, on_write);  // the alert, if any
      tls_failed(tls_->error());
      return;
    }
    if (send_tls_output(*tls_, stream, on_write) != 0) {
      tls_failed("the connection failed during the handshake");
      return;
    }
    if (r != TlsSession::Result::done) return;
    // In TLS 1.3 the client's handshake ends before the server has looked at the client's
    // certificate (or its absence): the server's verdict comes with its first bytes. Until
    // then the handshake is not counted, and a TLS error is still a handshake failure.
    tls_confirmed_ = tls_->version() != TLS1_3_VERSION;
    if (tls_confirmed_) pool_.stats().tls_handshakes[0].add();
    bool had_early = !tls_early_.empty();
    if (had_early) {
      bool ok = tls_->write(tls_early_.data(), tls_early_.size());
      tls_early_.clear();
      tls_early_.shrink_to_fit();
      if (!ok || send_tls_output(*tls_, stream, on_write) != 0) {
        fail(UpstreamError::reset);
        return;
      }
    }
    on_ready();
    if (state_ == State::closing) return;
    // The client may have stopped reading while early bytes piled up: they are sent (or
    // queued, and then on_write tells it), so tell it now if they went out at once.
    if (had_early && client_ && queued_bytes() < kLowWater) client_->on_upstream_drained();
    if (state_ == State::closing) return;
  }
  // Everything this input decrypts to, in batches (each handled and flushed, as a read).
  TlsSession::Result r = tls_->drain([this](const char* plain, std::size_t n) {
    if (!tls_confirmed_) {
      tls_confirmed_ = true;
      pool_.stats().tls_handshakes[0].add();
    }
    handle_data(plain, n);
    return state_ != State::closing;
  });
  if (r == TlsSession::Result::done) return;  // the connection closed
  if (r == TlsSession::Result::closed) {
    on_eof();  // the server's close_notify
    return;
  }
  if (r != TlsSession::Result::want) {
    if (!tls_confirmed_) {
      // The server refused the handshake after ours ended (TLS 1.3: "certificate required",
      // "unknown ca" for our client certificate): a connect failure, with its reason.
      send_tls_output(*tls_, stream, on_write);
      tls_failed(tls_->error());
      return;
    }
    fail(UpstreamError::reset);
    return;
  }
  // Reading may have produced output (a key update answered).
  if (send_tls_output(*tls_, stream, on_write) != 0) fail(UpstreamError::reset);
}

}  // namespace bulwark
