// An HTTP/2 upstream connection: the socket (and TLS, with ALPN h2), the nghttp2 client
// session and its callbacks dispatched to streams, the send loop, PING keepalive and the idle
// close. The streams are in h2_upstream_stream.cc.
#include <algorithm>
#include <cstring>

#include "core/h2_setup.h"
#include "core/log.h"
#include "net/listener.h"
#include "net/socket_read.h"
#include "net/tls.h"
#include "upstream/connection.h"
#include "upstream/h2_pool.h"

namespace bulwark {

namespace {

H2UpstreamConnection* self(void* user) { return static_cast<H2UpstreamConnection*>(user); }

// Framed output written at once (then the next batch).
constexpr std::size_t kSendBatch = 64 * 1024;

}  // namespace

H2UpstreamConnection::H2UpstreamConnection(H2Pool& pool, uv_loop_t* loop) : pool_(pool) {
  uv_tcp_init(loop, &tcp_);
  uv_timer_init(loop, &timer_);
  uv_idle_init(loop, &send_hook_);
  tcp_.data = this;
  timer_.data = this;
  send_hook_.data = this;
  open_handles_ = 3;
  last_read_ms_ = idle_since_ms_ = uv_now(loop);
}

bool H2UpstreamConnection::make_session() {
  // Response bytes open the window once the client took them (H2UpstreamStream::on_data).
  bool made = new_h2_session(&session_, /*server=*/false, this,
                             [](nghttp2_session_callbacks* cb, nghttp2_option*) {
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  });
  if (!made) return false;
  const UpstreamConfig& c = pool_.config();
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<std::uint32_t>(c.h2_initial_window)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
       static_cast<std::uint32_t>(c.max_response_header_bytes)},
  };
  if (nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0)
    return false;
  // Response bytes are taken off the connection's window at once (only a stream's own window
  // waits for its client), so the connection's window only has to cover the bytes in flight.
  std::uint64_t window = std::min<std::uint64_t>(
      std::max<std::uint64_t>(c.h2_initial_window * 4, 1 << 20), 0x7fffffff);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<std::int32_t>(window));
  return true;
}

void H2UpstreamConnection::connect(const sockaddr* address, std::uint64_t timeout_ms) {
  uv_tcp_nodelay(&tcp_, 1);
  if (!make_session()) {
    connect_error_ = UV_ENOMEM;
    uv_timer_start(&timer_, on_timer, 0, 0);
    return;
  }
  int rc = uv_tcp_connect(&connect_req_, &tcp_, address, on_connect);
  // A synchronous failure is reported from the timer, never from inside connect().
  if (rc != 0) connect_error_ = rc;
  uv_timer_start(&timer_, on_timer, rc == 0 ? timeout_ms : 0, 0);
}

void H2UpstreamConnection::on_connect(uv_connect_t* req, int status) {
  auto* c = static_cast<H2UpstreamConnection*>(req->handle->data);
  if (c->state_ == State::closing) return;
  auto& stats = c->pool_.stats();
  if (status < 0) {
    stats.connects[static_cast<int>(ConnectResult::failure)].add();
    c->fail(UpstreamError::connect_failure);
    return;
  }
  stats.connects[static_cast<int>(ConnectResult::success)].add();
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp_), no_read_buffer, on_read) != 0) {
    c->fail(UpstreamError::connect_failure);
    return;
  }
  if (c->pool_.config().tls) {
    c->start_tls();  // ready once the handshake is done (and ALPN said h2)
    return;
  }
  c->on_ready();
}

void H2UpstreamConnection::on_ready() {
  state_ = State::ready;
  last_read_ms_ = uv_now(pool_.loop());
  settle_by_ms_ = last_read_ms_ + pool_.config().connect_timeout_ms;
  arm_timer();
  for (std::size_t i = 0; i < streams_.size() && state_ == State::ready; ++i)
    streams_[i]->on_ready();
  if (state_ == State::ready) send();
  sweep();
}

H2UpstreamStream* H2UpstreamConnection::open_stream() {
  H2UpstreamStream* s = H2UpstreamStream::make(*this);
  s->reused_ = started_ > 0;
  ++started_;
  streams_.push_back(s);
  update_idle();
  return s;
}

bool H2UpstreamConnection::has_room() const {
  if (state_ == State::closing || going_away_) return false;
  std::size_t limit = pool_.config().h2_max_concurrent_streams;
  if (!settled_) {
    limit = 1;
  } else if (session_) {
    std::uint32_t peer =
        nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    limit = std::min<std::size_t>(limit, peer);
  }
  return streams_.size() < limit;
}

H2UpstreamStream* H2UpstreamConnection::stream(std::int32_t id) const {
  if (auto* s = static_cast<H2UpstreamStream*>(nghttp2_session_get_stream_user_data(session_, id)))
    return s;
  for (H2UpstreamStream* s : streams_)
    if (s->id_ == id) return s;
  return nullptr;
}

void H2UpstreamConnection::stream_done(H2UpstreamStream* s) {
  auto it = std::find(streams_.begin(), streams_.end(), s);
  if (it != streams_.end()) streams_.erase(it);
  retired_.push_back(s);
  if (s->id_ > 0) pool_.stats().h2_streams.add(-1);
  if (state_ == State::closing) return;
  if (streams_.empty()) {
    idle_since_ms_ = uv_now(pool_.loop());
    if (going_away_) {
      close();
      return;
    }
    arm_timer();
  }
  update_idle();
  pool_.on_room(this);
}

void H2UpstreamConnection::sweep() {
  for (H2UpstreamStream* s : retired_) H2UpstreamStream::recycle(s);
  retired_.clear();
}

void H2UpstreamConnection::update_idle() {
  bool idle = streams_.empty();
  if (idle == stats_idle_ || state_ == State::closing) return;
  stats_idle_ = idle;
  pool_.stats().active.add(idle ? -1 : 1);
  pool_.stats().idle.add(idle ? 1 : -1);
}

bool H2UpstreamConnection::send() {
  if (state_ == State::closing) return false;
  if (in_callbacks_) {
    send_wanted_ = true;  // after nghttp2 returns
    return true;
  }
  if (state_ != State::ready) return true;  // submitted frames wait in nghttp2 until then
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  do {
    send_wanted_ = false;
    in_callbacks_ = true;
    bool failed = false;
    while (uv_stream_get_write_queue_size(stream) < kHighWater) {
      const std::uint8_t* p = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &p);
      if (n < 0) {
        failed = true;
        break;
      }
      if (n == 0) break;
      out_.add_copy(std::string_view(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n)));
      if (out_.bytes() < kSendBatch) continue;
      int rc = tls_ ? out_.flush(*tls_, stream, on_write) : out_.flush(stream, on_write);
      out_.clear();
      if (rc != 0) {
        failed = true;
        break;
      }
    }
    if (!failed && !out_.empty()) {
      int rc = tls_ ? out_.flush(*tls_, stream, on_write) : out_.flush(stream, on_write);
      failed = rc != 0;
    }
    out_.clear();
    in_callbacks_ = false;
    if (close_wanted_) {
      close();
      return false;
    }
    if (failed) {
      fail(UpstreamError::reset);
      return false;
    }
    // Streams whose request bytes went out below the low-water mark may read on.
    std::vector<H2UpstreamStream*> drained;
    for (H2UpstreamStream* s : streams_)
      if (s->body_high_ && s->client_ && s->queued_bytes() < kLowWater) drained.push_back(s);
    for (H2UpstreamStream* s : drained) {  // retired ones are freed only by sweep()
      s->body_high_ = false;
      if (s->client_ && state_ == State::ready) s->client_->on_upstream_drained();
    }
    if (state_ == State::closing) return false;
  } while (send_wanted_);
  if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) {
    // The session is over: GOAWAY both ways and no stream left, or nghttp2 ended it for an
    // error of the upstream's (a bad frame): then the streams still attached fail with it.
    if (!peer_error_.empty()) {
      std::string why = std::move(peer_error_);
      fail(UpstreamError::protocol, why, static_cast<int>(H2Error::protocol_error));
    } else {
      fail(UpstreamError::reset);
    }
    return false;
  }
  return true;
}

void H2UpstreamConnection::request_send() {
  if (send_scheduled_ || state_ != State::ready) return;
  send_scheduled_ = true;
  uv_idle_start(&send_hook_, on_send_hook);
}

void H2UpstreamConnection::on_send_hook(uv_idle_t* idle) {
  auto* c = static_cast<H2UpstreamConnection*>(idle->data);
  uv_idle_stop(idle);
  c->send_scheduled_ = false;
  if (c->state_ != State::ready) return;
  c->send();
  c->sweep();
}

void H2UpstreamConnection::on_write(uv_write_t* req, int status) {
  auto* c = static_cast<H2UpstreamConnection*>(req->handle->data);
  free_queued_write(req);
  if (status < 0 || c->state_ != State::ready) return;  // the read side reports failures
  if (uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&c->tcp_)) < kLowWater) {
    c->send();
    c->sweep();
  }
}

// The socket is readable (net/socket_read.h): read into the worker's buffer with recv.
void H2UpstreamConnection::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t*) {
  auto* c = static_cast<H2UpstreamConnection*>(stream->data);
  if (c->state_ == State::closing) return;
  if (nread == UV_ENOBUFS) {
    nread = drain_socket(
        stream, upstream_read_buffer(), kReadBufferSize,
        [c](const char* data, std::size_t n) {
          c->last_read_ms_ = uv_now(c->pool_.loop());
          c->ping_sent_ms_ = 0;  // bytes from the upstream: it is alive
          if (c->tls_)
            c->tls_input(data, n);
          else
            c->input(data, n);
        },
        [c] { return c->state_ != State::closing; });
    if (c->state_ == State::closing) {
      c->sweep();
      return;
    }
  }
  if (nread < 0) {
    if (c->tls_ && !c->tls_->handshake_done()) {
      c->pool_.stats().tls_handshakes[1].add();
      c->pool_.log_tls_failure("the server closed the connection during the handshake");
      c->fail(UpstreamError::connect_failure);
    } else {
      c->fail(c->state_ == State::connecting ? UpstreamError::connect_failure
                                             : UpstreamError::reset);
    }
  }
  c->sweep();
}

void H2UpstreamConnection::input(const char* data, std::size_t len) {
  in_callbacks_ = true;
  ssize_t rc = nghttp2_session_mem_recv(session_, reinterpret_cast<const std::uint8_t*>(data), len);
  in_callbacks_ = false;
  if (state_ == State::closing) return;
  if (rc < 0) {
    std::string detail = "HTTP/2 protocol error from the upstream: ";
    detail += nghttp2_strerror(static_cast<int>(rc));
    fail(UpstreamError::protocol, detail, static_cast<int>(H2Error::protocol_error));
    return;
  }
  if (close_wanted_) {
    close();
    return;
  }
  // Each stream's client flushes what this read gave it (its bytes point into `data`).
  walk_.swap(touched_streams_);
  for (H2UpstreamStream* s : walk_) s->batch_end();  // retired ones are freed only by sweep()
  walk_.clear();
  request_send();  // acknowledgements, window updates, what the clients flushed
}

void H2UpstreamConnection::on_timer(uv_timer_t* timer) {
  auto* c = static_cast<H2UpstreamConnection*>(timer->data);
  if (c->state_ == State::closing) return;
  if (c->state_ == State::connecting) {
    if (c->connect_error_ != 0) {
      if (out_of_local_resources(c->connect_error_) || c->connect_error_ == UV_ENOMEM) {
        c->fail(UpstreamError::local_resources);
      } else {
        c->pool_.stats().connects[static_cast<int>(ConnectResult::failure)].add();
        c->fail(UpstreamError::connect_failure);
      }
    } else if (c->tls_) {
      c->pool_.stats().tls_handshakes[1].add();
      c->pool_.log_tls_failure("the handshake timed out");
      c->fail(UpstreamError::connect_timeout);
    } else {
      c->pool_.stats().connects[static_cast<int>(ConnectResult::timeout)].add();
      c->fail(UpstreamError::connect_timeout);
    }
    c->sweep();
    return;
  }
  const UpstreamConfig& cfg = c->pool_.config();
  std::uint64_t now = uv_now(c->pool_.loop());
  if (!c->settled_ && now >= c->settle_by_ms_) {
    c->pool_.stats().connects[static_cast<int>(ConnectResult::timeout)].add();
    c->fail(UpstreamError::connect_timeout);  // no SETTINGS: not an HTTP/2 server
    c->sweep();
    return;
  }
  if (c->ping_sent_ms_ && now >= c->ping_sent_ms_ + cfg.h2_ping_timeout_ms) {
    log_warn("upstream " + cfg.name + " endpoint " + c->pool_.address().to_string() +
             ": no answer to an HTTP/2 PING within http2.ping_timeout; closing the connection");
    c->fail(UpstreamError::reset);
    c->sweep();
    return;
  }
  if (c->streams_.empty() && cfg.pool.idle_timeout_ms &&
      now >= c->idle_since_ms_ + cfg.pool.idle_timeout_ms) {
    c->close();
    return;
  }
  if (!c->ping_sent_ms_ && cfg.h2_ping_interval_ms &&
      now >= c->last_read_ms_ + cfg.h2_ping_interval_ms) {
    c->ping_sent_ms_ = now;
    nghttp2_submit_ping(c->session_, NGHTTP2_FLAG_NONE, nullptr);
    c->send();
  }
  c->arm_timer();
  c->sweep();
}

void H2UpstreamConnection::arm_timer() {
  if (state_ != State::ready) return;
  const UpstreamConfig& cfg = pool_.config();
  std::uint64_t now = uv_now(pool_.loop());
  std::uint64_t due = ~std::uint64_t{0};
  if (!settled_)
    due = settle_by_ms_;
  else if (ping_sent_ms_)
    due = ping_sent_ms_ + cfg.h2_ping_timeout_ms;
  else if (cfg.h2_ping_interval_ms)
    due = last_read_ms_ + cfg.h2_ping_interval_ms;
  if (streams_.empty() && cfg.pool.idle_timeout_ms)
    due = std::min(due, idle_since_ms_ + cfg.pool.idle_timeout_ms);
  if (due == ~std::uint64_t{0}) {
    uv_timer_stop(&timer_);
    return;
  }
  uv_timer_start(&timer_, on_timer, due > now ? due - now : 1, 0);
}

void H2UpstreamConnection::close() {
  if (state_ == State::closing) return;
  if (in_callbacks_) {
    close_wanted_ = true;  // nghttp2 may not be re-entered: once it returns
    return;
  }
  close_wanted_ = false;
  if (state_ == State::ready && session_) {
    // GOAWAY (with what else is framed), best effort, so the upstream knows no stream is
    // coming; then close_notify.
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, nullptr, 0);
    in_callbacks_ = true;
    for (;;) {
      const std::uint8_t* p = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &p);
      if (n <= 0) break;
      out_.add_copy(std::string_view(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n)));
    }
    in_callbacks_ = false;
    auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
    if (!out_.empty()) {
      if (tls_)
        out_.flush(*tls_, stream, on_write);
      else
        out_.flush(stream, on_write);
      out_.clear();
    }
    if (tls_ && tls_->handshake_done()) {
      tls_->shutdown();
      send_tls_output(*tls_, stream, on_write);
    }
  }
  // Streams still attached are let go without a word, as an HTTP/1.1 connection's close().
  fail(UpstreamError::reset, {}, -1, false);
}

void H2UpstreamConnection::fail(UpstreamError error, std::string_view detail, int h2_error,
                                bool tell) {
  if (state_ == State::closing) return;
  if (h2_error >= 0) pool_.stats().h2_errors[static_cast<std::size_t>(h2_error)].add();
  bool was_idle = stats_idle_;
  state_ = State::closing;
  if (was_idle)
    pool_.stats().idle.add(-1);
  else
    pool_.stats().active.add(-1);
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_close);
  uv_close(reinterpret_cast<uv_handle_t*>(&send_hook_), on_close);
  std::string why(detail);  // the streams' clients may free what `detail` points into
  std::vector<H2UpstreamStream*> streams;
  streams.swap(streams_);
  for (H2UpstreamStream* s : streams) {
    s->closed_ = true;
    if (s->id_ > 0) pool_.stats().h2_streams.add(-1);
    s->id_ = -1;
    s->fail(error, why, tell);  // retired (stream_done) once released
  }
  pool_.on_closed(this, tell && !settled_, error);
}

void H2UpstreamConnection::on_close(uv_handle_t* handle) {
  auto* c = static_cast<H2UpstreamConnection*>(handle->data);
  if (--c->open_handles_ > 0) return;
  c->sweep();
  if (c->session_) nghttp2_session_del(c->session_);
  delete c;
}

// --- nghttp2 callbacks ------------------------------------------------------------------

int H2UpstreamConnection::on_begin_headers(nghttp2_session*, const nghttp2_frame* frame,
                                           void* user) {
  if (H2UpstreamStream* s = self(user)->stream(frame->hd.stream_id)) s->on_begin_headers();
  return 0;
}

int H2UpstreamConnection::on_header(nghttp2_session*, const nghttp2_frame* frame,
                                    const std::uint8_t* name, std::size_t namelen,
                                    const std::uint8_t* value, std::size_t valuelen,
                                    std::uint8_t, void* user) {
  H2UpstreamStream* s = self(user)->stream(frame->hd.stream_id);
  if (!s) return 0;
  if (!s->add_header(std::string_view(reinterpret_cast<const char*>(name), namelen),
                     std::string_view(reinterpret_cast<const char*>(value), valuelen)))
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // the stream is reset
  return 0;
}

int H2UpstreamConnection::on_frame_recv(nghttp2_session*, const nghttp2_frame* frame,
                                        void* user) {
  H2UpstreamConnection* c = self(user);
  switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
      if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
        c->settled_ = true;
        c->pool_.on_room(c);  // the limit is known (or changed): waiters may go
      }
      break;
    case NGHTTP2_GOAWAY:
      // Streams above last_stream_id are closed by nghttp2 as REFUSED_STREAM (sent again by
      // their exchanges); the others finish. No new stream goes here.
      c->going_away_ = true;
      if (frame->goaway.error_code != NGHTTP2_NO_ERROR)
        log_warn("upstream " + c->pool_.config().name + " endpoint " +
                 c->pool_.address().to_string() + " ended its HTTP/2 connection: " +
                 nghttp2_http2_strerror(frame->goaway.error_code));
      c->pool_.on_room(c);  // waiters may get a new connection
      break;
    case NGHTTP2_HEADERS:
      if (H2UpstreamStream* s = c->stream(frame->hd.stream_id))
        s->on_headers_frame((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
      break;
    case NGHTTP2_DATA:
      if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        if (H2UpstreamStream* s = c->stream(frame->hd.stream_id)) s->on_end_stream();
      break;
    default:
      break;
  }
  return 0;
}

int H2UpstreamConnection::on_data_chunk(nghttp2_session* session, std::uint8_t,
                                        std::int32_t stream_id, const std::uint8_t* data,
                                        std::size_t len, void* user) {
  // The connection's window opens at once; the stream's when its client took the bytes.
  nghttp2_session_consume_connection(session, len);
  H2UpstreamStream* s = self(user)->stream(stream_id);
  if (!s) {
    nghttp2_session_consume_stream(session, stream_id, len);
    return 0;
  }
  s->on_data(reinterpret_cast<const char*>(data), len);
  return 0;
}

int H2UpstreamConnection::on_stream_close(nghttp2_session*, std::int32_t stream_id,
                                          std::uint32_t error_code, void* user) {
  if (H2UpstreamStream* s = self(user)->stream(stream_id)) s->on_closed(error_code);
  return 0;
}

int H2UpstreamConnection::on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  // A GOAWAY with an error that Bulwark did not ask for: nghttp2 found the upstream breaking
  // the protocol (a connection error) and ends the session.
  H2UpstreamConnection* c = self(user);
  if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR &&
      c->peer_error_.empty()) {
    c->peer_error_ = "the upstream broke the HTTP/2 protocol (";
    c->peer_error_ += nghttp2_http2_strerror(frame->goaway.error_code);
    c->peer_error_ += ")";
  }
  return 0;
}

int H2UpstreamConnection::on_frame_not_send(nghttp2_session*, const nghttp2_frame* frame, int,
                                            void* user) {
  // A request that could not be started (the upstream went away first): not processed.
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  H2UpstreamStream* s = self(user)->stream(frame->hd.stream_id);
  if (s && s->id_ == frame->hd.stream_id && !s->closed_) s->on_closed(NGHTTP2_REFUSED_STREAM);
  return 0;
}

}  // namespace bulwark
