// H2UpstreamConnection's TLS (an upstream with a tls block): the handshake after the TCP
// connect, with ALPN offering only h2 (a server that does not choose it fails the handshake),
// then ciphertext in and the plaintext to the session.
#include "net/tls.h"
#include "upstream/h2_connection.h"
#include "upstream/h2_pool.h"

namespace bulwark {

void H2UpstreamConnection::start_tls() {
  tls_ = std::make_unique<TlsSession>();
  const TlsClientContext* context = pool_.tls();
  EndpointPool* pool = &pool_;
  std::string why;
  if (!context)
    why = "the upstream's TLS context could not be made (see the error logged before)";
  else if (!tls_->start_client(*context,
                               context->config().sni.empty() ? pool_.server_name()
                                                             : context->config().sni,
                               pool_.tls_session(),
                               [pool](SSL_SESSION* s) { pool->set_tls_session(s); }))
    why = tls_->error();
  if (!why.empty()) {
    pool_.stats().tls_handshakes[1].add();
    pool_.log_tls_failure(why);
    fail(UpstreamError::connect_failure);
    return;
  }
  tls_input(nullptr, 0);  // sends the ClientHello
}

void H2UpstreamConnection::tls_input(const char* data, std::size_t len) {
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  if (len > 0) tls_->feed(data, len);
  if (!tls_->handshake_done()) {
    TlsSession::Result r = tls_->handshake();
    bool sent = send_tls_output(*tls_, stream, on_write) == 0;
    if (r == TlsSession::Result::error || !sent) {
      pool_.stats().tls_handshakes[1].add();
      pool_.log_tls_failure(r == TlsSession::Result::error
                                ? tls_->error()
                                : "the connection failed during the handshake");
      fail(UpstreamError::connect_failure);
      return;
    }
    if (r != TlsSession::Result::done) return;
    if (tls_->alpn_protocol() != "h2") {
      pool_.stats().tls_handshakes[1].add();
      pool_.log_tls_failure("the server did not choose h2 by ALPN (protocol: h2 needs it)");
      fail(UpstreamError::connect_failure);
      return;
    }
    pool_.stats().tls_handshakes[0].add();
    on_ready();
    if (state_ == State::closing) return;
  }
  TlsSession::Result r = tls_->drain([this](const char* plain, std::size_t n) {
    input(plain, n);
    return state_ != State::closing;
  });
  if (r == TlsSession::Result::done) return;
  if (r == TlsSession::Result::closed || r != TlsSession::Result::want) {
    fail(UpstreamError::reset);
    return;
  }
  if (send_tls_output(*tls_, stream, on_write) != 0) fail(UpstreamError::reset);
}

}  // namespace bulwark
