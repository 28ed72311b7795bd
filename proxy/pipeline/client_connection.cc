// A ClientConnection's socket, reading, timers, local replies, log line and close. Parsing is in
// request_parse.cc; the request itself in exchange.cc.
#include "pipeline/client_connection.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "admin/stats.h"
#include "core/log.h"
#include "net/socket_read.h"
#include "worker.h"

namespace bulwark {

namespace {
constexpr std::uint64_t kLingerMs = 2000;
}  // namespace

ClientConnection::ClientConnection(ListenerRuntime& listener)
    : Downstream(listener, *listener.worker) {
  uv_tcp_init(worker_.loop(), &tcp_);
  uv_timer_init(worker_.loop(), &timer_);
  tcp_.data = this;
  timer_.data = this;
  open_handles_ = 2;
  llhttp_init(&parser_, HTTP_REQUEST, &settings());
  // Any HTTP/1.x version is accepted by the parser; Exchange::start_request() serves 1.x (x > 1) as
  // 1.1 (RFC 9110 6.2) and refuses other major versions. llhttp 8.1 has no setter for it.
  parser_.lenient_flags |= LENIENT_VERSION;
  parser_.data = this;
  ++listener_.connections;
  listener_.view->stats->connections.add(1);
}

void ClientConnection::release_buffers() {
  if (phase_ == Phase::idle || closing_) end_exchange();
  if (!buffers_) return;
  worker_.release_buffers(buffers_);
  buffers_ = nullptr;
}

bool ClientConnection::open(int fd) {
  if (uv_tcp_open(&tcp_, fd) != 0) {
    ::close(fd);
    close();
    return false;
  }
  uv_tcp_nodelay(&tcp_, 1);
  sockaddr_storage peer{};
  int len = sizeof peer;
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&peer), &len) == 0)
    client_ip_ = ip_string(reinterpret_cast<sockaddr*>(&peer));
  // A new connection must deliver its first request head (TLS handshake included) within the
  // header timeout.
  arm_timer(listener_.view->config->header_timeout_ms);
  if (const auto& tls = listener_.view->config->tls) {
    tls_ = std::make_unique<TlsSession>();
    if (!tls->context || !tls_->start_server(*tls->context)) {
      close();
      return false;
    }
  }
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), no_read_buffer, on_read) != 0) {
    close();
    return false;
  }
  reading_ = true;
  const ListenerConfig& lc = *listener_.view->config;
  if (!tls_ && lc.h2c && !lc.http1) return start_http2();  // prior knowledge only
  return true;
}

bool ClientConnection::start_http2() {
  first_input_ = false;
  h2_ = std::make_unique<H2Session>(*this);
  listener_.view->stats->h2_connections.add(1);
  if (!h2_->start()) {
    close();
    return false;
  }
  return h2_->flush();
}

namespace {
constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
}  // namespace

bool ClientConnection::sniff_preface(const char* data, std::size_t len) {
  std::string_view in(data, len);
  if (!pending_input_.empty()) {
    pending_input_.append(data, len);
    in = pending_input_;
  }
  std::size_t n = std::min(in.size(), kPreface.size());
  if (in.substr(0, n) != kPreface.substr(0, n)) {
    first_input_ = false;  // HTTP/1
    return false;
  }
  if (in.size() < kPreface.size()) {
    if (pending_input_.empty()) pending_input_.assign(data, len);
    return true;  // wait for the rest of the preface
  }
  std::string held;
  held.swap(pending_input_);
  if (!start_http2()) return true;
  if (held.empty())
    h2_->input(data, len);
  else
    h2_->input(held.data(), held.size());
  return true;
}

bool ClientConnection::write_batch(OutBatch& out) {
  if (closing_) return false;
  int rc = tls_ ? out.flush(*tls_, reinterpret_cast<uv_stream_t*>(&tcp_), on_write)
                : out.flush(reinterpret_cast<uv_stream_t*>(&tcp_), on_write);
  if (rc != 0) {
    close();
    return false;
  }
  return true;
}

// One timer per connection serves every phase's timeout. Moving the deadline later (the
// usual case: route deadline after the previous one, idle after that) touches no timer; the
// timer fires at the old time, sees the later deadline and re-arms once. Only an earlier
// deadline restarts it. This keeps timer work off the per-request path.
void ClientConnection::arm_timer(std::uint64_t ms) {
  if (ms == 0) {
    deadline_ms_ = 0;  // a pending expiry will find nothing to do
    return;
  }
  std::uint64_t now = uv_now(worker_.loop());
  deadline_ms_ = now + ms;
  if (timer_due_ms_ == 0 || deadline_ms_ < timer_due_ms_) {
    timer_due_ms_ = deadline_ms_;
    uv_timer_start(&timer_, on_timer, ms, 0);
  }
}

void ClientConnection::arm_timer_within(std::uint64_t ms) {
  std::uint64_t due = uv_now(worker_.loop()) + ms;
  if (deadline_ms_ == 0 || due < deadline_ms_) arm_timer(ms);
}

void ClientConnection::pause_reading() {
  if (!reading_ || read_paused_ || closing_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  read_paused_ = true;
}

void ClientConnection::resume_reading() {
  if (!read_paused_ || closing_ || !reading_) return;  // !reading_: the client's end was read
  read_paused_ = false;
  // body_idle counts only while we read
  if (ex_) ex_->body_activity_ms = uv_now(worker_.loop());
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), no_read_buffer, on_read) != 0) close();
}

// The socket is readable (net/socket_read.h): read into the worker's buffer with recv.
void ClientConnection::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t*) {
  auto* d = static_cast<ClientConnection*>(stream->data);
  if (d->closing_) return;
  if (d->h2_) d->h2_->sweep();
  if (nread == UV_ENOBUFS) {
    nread = drain_socket(
        stream, d->worker_.read_buffer(), kReadBufferSize,
        [d](const char* data, std::size_t n) { d->on_bytes(data, n); },
        [d] { return !d->closing_ && d->reading_ && !d->read_paused_; });
    if (d->closing_) return;
  }
  if (nread >= 0) return;
  if (d->phase_ == Phase::lingering || nread != UV_EOF ||
      (d->tls_ && !d->tls_->handshake_done())) {
    d->close();
    return;
  }
  d->on_eof();
}

void ClientConnection::on_bytes(const char* data, std::size_t len) {
  if (phase_ == Phase::lingering) return;  // discarded: we are closing
  if (tls_) {
    tls_input(data, len);
  } else {
    handle_input(data, len);
    if (!closing_) flush();
  }
  if (!closing_ && phase_ == Phase::idle) release_buffers();
}

void ClientConnection::tls_input(const char* data, std::size_t len) {
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  tls_->feed(data, len);
  if (!tls_->handshake_done()) {
    tls_bytes_in_ += len;
    TlsSession::Result r = tls_->handshake();
    int rc = send_tls_output(*tls_, stream, on_write);  // the server's flight, or an alert
    if (r == TlsSession::Result::error) {
      listener_.view->stats->tls_handshakes[1].add();
      tls_bytes_in_ = 0;  // counted
      close();
      return;
    }
    if (rc != 0) {
      close();
      return;
    }
    if (r != TlsSession::Result::done) return;
    listener_.view->stats->tls_handshakes[0].add();
    first_input_ = false;
    if (tls_->alpn_protocol() == "h2") {
      if (!start_http2()) return;
    } else if (!listener_.view->config->http1) {
      close();  // an HTTP/2-only listener and a client that did not choose h2
      return;
    }
  }
  TlsSession::Result r = tls_->drain([this](const char* plain, std::size_t n) {
    if (phase_ == Phase::lingering) return true;  // discarded, as a plain read would be
    handle_input(plain, n);
    return !closing_ && flush();
  });
  if (r == TlsSession::Result::done) return;  // the connection closed
  if (r == TlsSession::Result::closed && phase_ != Phase::lingering) {
    on_eof();  // the client's close_notify
    return;
  }
  if (r != TlsSession::Result::want) {
    close();  // a TLS error, or close_notify while lingering: nothing more to wait for
    return;
  }
  // Reading may have produced output (session tickets after the handshake, a key update).
  if (send_tls_output(*tls_, stream, on_write) != 0) close();
}

void ClientConnection::on_eof() {
  ClientConnection* d = this;
  d->client_eof_ = true;
  if (h2_) {
    close();  // an HTTP/2 client that closes is done with every stream
    return;
  }
  switch (d->phase_) {
    case Phase::idle:
    case Phase::head:
      d->close_gracefully();  // after what is still queued towards the client
      break;
    case Phase::request:
      // A client may half-close after sending its requests: answer each one it sent
      // (pipelined ones wait in pending_input_), then close.
      if (d->x().request_complete && !d->x().upgrade) {
        if (d->pending_input_.empty()) d->close_after_response_ = true;
        uv_read_stop(reinterpret_cast<uv_stream_t*>(&d->tcp_));
        d->reading_ = false;
        d->read_paused_ = false;  // nothing to resume
      } else {
        d->close();
      }
      break;
    case Phase::tunnel:
      d->close_gracefully();
      break;
    case Phase::lingering:
      break;
  }
}

void ClientConnection::handle_input(const char* data, std::size_t len) {
  if (h2_) {
    h2_->input(data, len);
    return;
  }
  if (first_input_) {
    if (!tls_ && listener_.view->config->h2c && sniff_preface(data, len)) return;
    first_input_ = false;
    if (!pending_input_.empty()) {  // a partial preface that turned out to be HTTP/1
      std::string held;
      held.swap(pending_input_);
      execute(held.data(), held.size());
      if (!closing_) flush();  // body bytes handed on point into `held`
      return;
    }
  }
  if (phase_ == Phase::tunnel) {
    x().bytes_in += len;
    x().upstream_add(data, len, true);
    if (phase_ == Phase::tunnel) arm_timer(listener_.view->config->idle_timeout_ms);
    return;
  }
  if (x().request_complete) {
    // Pipelined: the next request waits until this one's response is complete. (After an
    // upgrade request: held until the upstream switches protocols; see after_upgrade_request.)
    pending_input_.append(data, len);
    if (pending_input_.size() > kHighWater) pause_reading();
    return;
  }
  execute(data, len);
}

void ClientConnection::serve_pending_input() {
  if (done()) return;
  if (pending_input_.empty()) {
    resume_reading();
    if (phase_ == Phase::idle) release_buffers();
    return;
  }
  b().resume_input.clear();
  b().resume_input.swap(pending_input_);
  execute(b().resume_input.data(), b().resume_input.size());
  if (!closing_) flush();  // the batch may point into the resume buffer
  b().resume_input.clear();
  if (client_eof_ && !done() && pending_input_.empty() &&
      (phase_ == Phase::idle || phase_ == Phase::head ||
       (phase_ == Phase::request && !x().request_complete))) {
    // The client half-closed and every request it sent is answered (or the last one can
    // never be completed): close.
    if (phase_ == Phase::request) account_request();
    close_gracefully();
    return;
  }
  if (!done() && pending_input_.size() < kHighWater) resume_reading();
  if (!done() && phase_ == Phase::idle) release_buffers();
}

bool ClientConnection::flush() {
  if (closing_) return false;
  if (h2_) {
    h2_->request_flush();
    return true;
  }
  if (ex_ && ex_->attempt.conn) ex_->attempt.conn->flush();  // a failure calls on_upstream_error
  if (closing_) return false;
  if (buffers_ && !buffers_->out.empty()) {
    if (tls_ && !tls_->handshake_done()) {
      // A reply before the handshake is done (a header timeout): nothing can carry it.
      close();
      return false;
    }
    if (tls_ || !worker_.turn_writes().hold(*this, buffers_->out)) {
      if (holding() && !send_held()) return false;  // what was held goes first
      int rc = tls_ ? buffers_->out.flush(*tls_, reinterpret_cast<uv_stream_t*>(&tcp_), on_write)
                    : buffers_->out.flush(reinterpret_cast<uv_stream_t*>(&tcp_), on_write);
      if (rc != 0) {
        close();
        return false;
      }
    }
    if (ex_ && ex_->response_started) ex_->response_committed = true;
  }
  std::size_t queued = uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&tcp_));
  if (ex_ && ex_->attempt.conn && queued > kHighWater) ex_->attempt.conn->pause_reading();
  if (ex_ && ex_->attempt.conn && ex_->attempt.conn->queued_bytes() > kHighWater) pause_reading();
  return true;
}

bool ClientConnection::send_held() {
  if (send_held_bytes(reinterpret_cast<uv_stream_t*>(&tcp_), on_write) != 0) {
    close();
    return false;
  }
  if (ex_ && ex_->attempt.conn && write_queue_size() > kHighWater)
    ex_->attempt.conn->pause_reading();
  return true;
}

void ClientConnection::on_write(uv_write_t* req, int status) {
  auto* d = static_cast<ClientConnection*>(req->handle->data);
  free_queued_write(req);
  if (d->closing_) return;
  if (status < 0) {
    d->close();
    return;
  }
  if (d->h2_) {
    d->h2_->sweep();
    if (uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&d->tcp_)) < kLowWater)
      d->h2_->on_socket_drained();
    return;
  }
  if (d->ex_ && d->ex_->attempt.conn &&
      uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&d->tcp_)) < kLowWater)
    d->ex_->attempt.conn->resume_reading();
}

void ClientConnection::on_timer(uv_timer_t* timer) {
  auto* d = static_cast<ClientConnection*>(timer->data);
  d->timer_due_ms_ = 0;
  if (d->closing_ || d->deadline_ms_ == 0) return;
  std::uint64_t now = uv_now(d->worker_.loop());
  if (now < d->deadline_ms_) {  // the deadline moved later since the timer was set
    d->timer_due_ms_ = d->deadline_ms_;
    uv_timer_start(&d->timer_, on_timer, d->deadline_ms_ - now, 0);
    return;
  }
  d->deadline_ms_ = 0;
  if (d->h2_ && d->phase_ != Phase::lingering) {
    d->h2_->sweep();
    d->h2_->on_timer();
    return;
  }
  switch (d->phase_) {
    case Phase::idle:
    case Phase::tunnel:
    case Phase::lingering:
      d->close();
      break;
    case Phase::head:
      d->local_reply(Reason::request_timeout, "the request head was not received in time", true);
      break;
    case Phase::request:
      d->x().on_request_timeout();
      break;
  }
}

void ClientConnection::local_reply(Reason reason, std::string_view detail, bool close_after,
                                   int status) {
  if (done()) return;
  if (x().response_started) {
    close();  // too late for a reply: the client must see the response break
    return;
  }
  if (x().attempt.conn) x().detach_upstream(false);
  // After an upgrade request llhttp parses nothing more (see after_upgrade_request): a local
  // reply to one ends the connection.
  bool must_close = close_after || !x().request_complete || close_after_response_ || draining_ ||
                    x().request_upgrade;
  LocalReply reply;
  reply.reason = reason;
  reply.status = status;
  reply.detail = detail;
  if (x().attempts > 1 && x().reply_extra_len + 40 < sizeof x().reply_extra) {
    int n = std::snprintf(x().reply_extra + x().reply_extra_len,
                          sizeof x().reply_extra - x().reply_extra_len,
                          "x-bulwark-attempts: %d\r\n", x().attempts);
    x().reply_extra_len += static_cast<std::size_t>(n);
  }
  reply.extra = std::string_view(x().reply_extra, x().reply_extra_len);
  reply.request_id = x().request_id;
  reply.minor_version = phase_ == Phase::request ? minor_version_ : 1;
  reply.close = must_close;
  reply.head_request = x().head_request;
  x().status = write_local_reply(b().response_head, reply);
  x().reply_reason = reason;
  x().local_reply_sent = true;
  RouteStats& rs = x().route_stats ? *x().route_stats : view().unmatched();
  rs.local_replies[static_cast<int>(reason)].add();
  b().out.add(b().response_head);
  x().bytes_out += b().response_head.size();
  x().response_started = true;
  if (must_close) close_after_response_ = true;
  flush();
  finish_request();
}

void ClientConnection::finish_request() {
  account_request();
  if (x().attempt.conn) x().detach_upstream(false);
  x().end_attempt();  // also when still waiting for a pooled connection
  x().leave_admission();
  // After a half-close, requests already read are still answered (serve_pending_input closes
  // once they are).
  bool close_now =
      close_after_response_ || draining_ || (client_eof_ && !in_execute_ && pending_input_.empty());
  reset_request();
  if (close_now) {
    close_gracefully();
    return;
  }
  phase_ = Phase::idle;
  arm_timer(listener_.view->config->idle_timeout_ms);
  if (!in_execute_) {
    llhttp_resume(&parser_);
    serve_pending_input();
  }
}

void ClientConnection::reset_request() {
  end_exchange();
  error_reason_set_ = false;
  error_status_ = 0;
  chunked_body_ = false;
}

void ClientConnection::close_gracefully() {
  if (done()) return;
  if (ex_ && ex_->attempt.conn) x().detach_upstream(false);
  if (h2_)
    h2_->flush();  // what is framed goes before the FIN
  else
    flush();
  if (closing_ || (holding() && !send_held())) return;  // the FIN goes after every byte
  phase_ = Phase::lingering;
  if (tls_ && tls_->handshake_done()) {
    tls_->shutdown();  // close_notify, after the response
    if (send_tls_output(*tls_, reinterpret_cast<uv_stream_t*>(&tcp_), on_write) != 0) {
      close();
      return;
    }
  }
  // Send FIN after the queued bytes, then discard input until the client closes (or the
  // linger time ends) so that unread request bytes do not turn our close into a reset that
  // would destroy the response in flight.
  if (uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t*>(&tcp_), on_shutdown) != 0) {
    close();
    return;
  }
  arm_timer(kLingerMs);
  if (client_eof_) return;  // nothing more will come: on_shutdown closes
  if (!reading_) {
    reading_ = true;
    read_paused_ = false;
    if (uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), no_read_buffer, on_read) != 0) close();
  } else {
    resume_reading();
  }
}

void ClientConnection::on_shutdown(uv_shutdown_t* req, int status) {
  auto* d = static_cast<ClientConnection*>(req->handle->data);
  // Every queued byte is written. A client that half-closed has nothing left to send.
  if ((status < 0 || d->client_eof_) && !d->closing_) d->close();
}

void ClientConnection::drain() {
  draining_ = true;
  if (h2_) {
    h2_->drain();  // GOAWAY; closes once the open streams are done
    return;
  }
  if (phase_ == Phase::idle) close();
}

void ClientConnection::close() {
  if (closing_) return;
  if (phase_ == Phase::request || phase_ == Phase::tunnel) account_request();
  if (ex_) {
    if (ex_->attempt.conn) {
      ex_->attempt.conn->close();
      ex_->attempt.conn = nullptr;
    }
    x().end_attempt();
    x().leave_admission();
  }
  closing_ = true;
  if (h2_) h2_->abort_streams();
  if (buffers_) buffers_->out.clear();
  // Held bytes were written as far as the request path knows: they go before the close.
  send_held_bytes(reinterpret_cast<uv_stream_t*>(&tcp_), on_write);
  if (tls_ && tls_->handshake_done()) {
    tls_->shutdown();  // close_notify, best effort (an idle timeout, a drain)
    send_tls_output(*tls_, reinterpret_cast<uv_stream_t*>(&tcp_), on_write);
  } else if (tls_ && tls_bytes_in_ > 0) {
    listener_.view->stats->tls_handshakes[1].add();  // the client left, or timed out, mid-handshake
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_close);
}

void ClientConnection::on_close(uv_handle_t* handle) {
  auto* d = static_cast<ClientConnection*>(handle->data);
  if (--d->open_handles_ > 0) return;
  if (d->h2_) {
    d->h2_.reset();
    d->listener_.view->stats->h2_connections.add(-1);
  }
  d->release_buffers();
  --d->listener_.connections;
  d->listener_.view->stats->connections.add(-1);
  d->worker_.remove_downstream(d);
  delete d;
}

}  // namespace bulwark
