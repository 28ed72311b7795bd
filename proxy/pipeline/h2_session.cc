// An HTTP/2 client connection's session: nghttp2 set up with Bulwark's SETTINGS and limits,
// its events dispatched to streams, its output framed into the connection's socket, and the
// attacks it detects (or Bulwark does) ended with GOAWAY and counted. The streams are in
// h2_stream.cc.
#include "pipeline/h2_session.h"

#include <algorithm>
#include <cstring>

#include "admin/stats.h"
#include "core/h2_setup.h"
#include "core/log.h"
#include "pipeline/client_connection.h"
#include "worker.h"

namespace bulwark {

namespace {

// A client that keeps opening streams past the limit after being refused this often.
constexpr std::uint64_t kMaxRefusedStreams = 100;
// Map nodes of retired streams kept for new ones (they hold no stream, so AddressSanitizer
// builds keep them too).
constexpr std::size_t kSpareNodes = 16;
// Streams a client may reset: a burst, then so many a second.
constexpr double kResetBurst = 200;
constexpr double kResetRate = 33;

}  // namespace

H2Session::H2Session(ClientConnection& conn) : conn_(conn) {}

H2Session::~H2Session() {
  if (flush_queued_) conn_.worker().cancel_h2_flush(this);
  abort_streams();
  retired_.clear();
  if (session_) nghttp2_session_del(session_);
}

bool H2Session::start() {
  // Request bytes are acknowledged once the upstream took them (H2Stream::consume).
  bool made = new_h2_session(&session_, /*server=*/true, this,
                             [](nghttp2_session_callbacks* cb, nghttp2_option* opt) {
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame);
    // Rapid reset (CVE-2023-44487): a burst of 1000 resets, then 33 a second.
    nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
    // CONTINUATION flood (CVE-2024-27316 class): a header block in at most 8 of them.
    nghttp2_option_set_max_continuations(opt, 8);
  });
  if (!made) return false;
  const ListenerConfig& lc = *conn_.listener().view->config;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
       static_cast<std::uint32_t>(lc.h2_max_concurrent_streams)},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<std::uint32_t>(lc.h2_initial_window)},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, static_cast<std::uint32_t>(lc.h2_max_frame_size)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<std::uint32_t>(lc.max_header_bytes)},
      // RFC 7540's priority tree is deprecated (RFC 9113 5.3): without it nghttp2 keeps no
      // closed streams and schedules by RFC 9218 urgency.
      {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
  };
  if (nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0)
    return false;
  // The connection's window: room for several streams' windows at once.
  std::uint64_t conn_window = std::max<std::uint64_t>(lc.h2_initial_window * 4, 1 << 20);
  conn_window = std::min<std::uint64_t>(conn_window, 0x7fffffff);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<std::int32_t>(conn_window));
  return true;
}

bool H2Session::input(const char* data, std::size_t len) {
  in_recv_ = true;
  ssize_t rc = nghttp2_session_mem_recv(session_, reinterpret_cast<const std::uint8_t*>(data), len);
  in_recv_ = false;
  // Request body bytes handed to upstream connections point into `data`: out before it is
  // reused.
  for (auto& [id, st] : streams_)
    if (st->ex_ && st->ex_->attempt.conn) st->ex_->attempt.conn->flush();
  if (rc < 0) {
    switch (rc) {
      case NGHTTP2_ERR_FLOODED:
        fail(pings_ >= settings_ ? H2Error::ping_flood : H2Error::settings_flood,
             NGHTTP2_ENHANCE_YOUR_CALM);
        break;
      case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
        fail(H2Error::continuation_flood, NGHTTP2_ENHANCE_YOUR_CALM);
        break;
      default:  // a callback's verdict (counted there), a bad preface, out of memory
        fail(H2Error::protocol_error, NGHTTP2_PROTOCOL_ERROR);
        break;
    }
    want_close_ = true;
    flush();
    return false;
  }
  request_flush();
  return true;
}

void H2Session::sweep() {
  // Kept for the next streams (their buffers warm), up to a few; none under AddressSanitizer,
  // which then sees any use of a retired stream.
#if defined(__SANITIZE_ADDRESS__)
  constexpr std::size_t kSpare = 0;
#else
  constexpr std::size_t kSpare = 16;
#endif
  for (auto& s : retired_) {
    s->release_request();
    if (spare_.size() < kSpare) spare_.push_back(std::move(s));
  }
  retired_.clear();
}

void H2Session::request_flush() {
  if (flush_queued_ || conn_.closing()) return;
  flush_queued_ = true;
  conn_.worker().defer_h2_flush(this);
}

void H2Session::deferred_flush() {
  flush_queued_ = false;
  sweep();
  flush();
}

bool H2Session::flush() {
  if (conn_.closing() || close_requested_) return false;
  for (auto& [id, s] : streams_)
    if (s->head_pending_) s->submit_head();
  // Frame while the socket keeps up; the rest waits for on_socket_drained (a write that the
  // socket could not take at once).
  for (;;) {
    bool more = false;
    while (conn_.write_queue_size() < kHighWater) {
      if (out_.bytes() >= kHighWater) {
        more = true;
        break;
      }
      const std::uint8_t* p = nullptr;
      ssize_t n = nghttp2_session_mem_send(session_, &p);
      if (n < 0) {
        want_close_ = true;
        break;
      }
      if (n == 0) break;
      out_.add_copy(
          std::string_view(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n)));
    }
    if (!out_.empty() && !conn_.write_batch(out_)) return false;
    out_.clear();
    if (!more) break;
  }
  if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_))
    want_close_ = true;
  if (draining_ && streams_.empty()) want_close_ = true;
  if (want_close_) {
    close_requested_ = true;  // what close_gracefully flushes is framed already
    conn_.close_gracefully();
    return false;
  }
  return true;
}

void H2Session::on_socket_drained() {
  if (nghttp2_session_want_write(session_)) flush();
}

void H2Session::drain() {
  if (draining_) return;
  draining_ = true;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  flush();
}

void H2Session::abort_streams() {
  auto streams = std::move(streams_);
  streams_.clear();
  last_begun_ = nullptr;
  for (auto& [id, s] : streams) {
    s->end_request_use();
    s->on_closed();
    retired_.push_back(std::move(s));
  }
  update_streams_gauge(-static_cast<long>(streams.size()));
}

void H2Session::fail(H2Error why, std::uint32_t code) {
  if (failed_) return;
  failed_ = true;
  count(why);
  nghttp2_session_terminate_session(session_, code);
  want_close_ = true;
}

void H2Session::count(H2Error why) {
  conn_.listener().view->stats->h2_errors[static_cast<int>(why)].add();
  static LogThrottle throttle;
  throttle.log(LogLevel::warn, "listener " + conn_.listener().name() + ": HTTP/2 connection from " +
                                   std::string(conn_.client_ip()) + " closed: " + h2_error_name(why));
}

void H2Session::update_streams_gauge(long delta) {
  if (delta) conn_.listener().view->stats->h2_streams.add(delta);
}

H2Stream* H2Session::find(std::int32_t id) {
  // A header block's fields come one callback each: the stream that began last is the one.
  if (last_begun_ && last_begun_->id() == id) return last_begun_;
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

void H2Session::retire(H2Stream* s) {
  auto it = streams_.find(s->id());
  if (it == streams_.end()) return;
  if (last_begun_ == s) last_begun_ = nullptr;
  auto node = streams_.extract(it);
  retired_.push_back(std::move(node.mapped()));
  if (spare_nodes_.size() < kSpareNodes) spare_nodes_.push_back(std::move(node));
  update_streams_gauge(-1);
}

void H2Session::stream_deadline_changed(std::uint64_t due_ms) {
  std::uint64_t now = uv_now(conn_.worker().loop());
  conn_.arm_timer_within(due_ms > now ? due_ms - now : 1);
}

void H2Session::on_timer() {
  std::uint64_t now = uv_now(conn_.worker().loop());
  std::uint64_t next = 0;
  std::vector<H2Stream*> due;
  bool stalled = false;
  std::uint64_t header_timeout = conn_.listener().view->config->header_timeout_ms;
  for (auto& [id, s] : streams_) {
    // A header block must be complete within timeouts.header: until it is, nothing else can
    // be read on the connection (CONTINUATION frames must follow), so a client that stops
    // half-way holds the whole connection.
    if (!s->headers_done_ && now - s->begun_ms_ >= header_timeout) {
      fail(H2Error::protocol_error, NGHTTP2_PROTOCOL_ERROR);
      flush();
      conn_.close();
      return;
    }
    if (s->deadline_ms_ && s->deadline_ms_ <= now) due.push_back(s.get());
    else if (s->deadline_ms_ && (!next || s->deadline_ms_ < next)) next = s->deadline_ms_;
    if (s->head_submitted_ && s->body_sent_ < s->body_.size() &&
        (nghttp2_session_get_stream_remote_window_size(session_, id) <= 0 ||
         nghttp2_session_get_remote_window_size(session_) <= 0))
      stalled = true;
  }
  for (H2Stream* s : due) {
    if (find(s->id()) != s) continue;
    s->deadline_ms_ = 0;
    s->on_timeout();
  }
  // A client that lets response data wait on a closed window for the idle timeout is gone
  // (or attacking): the connection ends.
  std::uint64_t idle = conn_.listener().view->config->idle_timeout_ms;
  if (stalled) {
    if (!stall_since_ms_) stall_since_ms_ = now;
    if (idle && now - stall_since_ms_ >= idle) {
      fail(H2Error::window_stall, NGHTTP2_FLOW_CONTROL_ERROR);
      flush();
      conn_.close();
      return;
    }
  } else {
    stall_since_ms_ = 0;
  }
  if (streams_.empty()) {
    if (idle_armed_ || draining_) {
      // The idle timeout passed without a stream: say goodbye and close.
      nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                            nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                            nullptr, 0);
      want_close_ = true;
      flush();
      return;
    }
    idle_armed_ = true;
    conn_.arm_timer(idle ? idle : 0);
  } else {
    idle_armed_ = false;
    // While streams are open the timer also watches their windows, once a second.
    std::uint64_t wait = next ? next - now : 1000;
    conn_.arm_timer(std::min<std::uint64_t>(wait ? wait : 1, 1000));
  }
  flush();
}

// nghttp2 callbacks

int H2Session::on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* s = static_cast<H2Session*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  if (s->draining_) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  if (s->failed_) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  std::unique_ptr<H2Stream> stream;
  if (!s->spare_.empty()) {
    stream = std::move(s->spare_.back());
    s->spare_.pop_back();
    stream->reuse(frame->hd.stream_id);
  } else {
    stream = std::make_unique<H2Stream>(*s, frame->hd.stream_id);
  }
  nghttp2_session_set_stream_user_data(s->session_, frame->hd.stream_id, stream.get());
  s->last_begun_ = stream.get();
  if (!s->spare_nodes_.empty()) {
    auto node = std::move(s->spare_nodes_.back());
    s->spare_nodes_.pop_back();
    node.key() = frame->hd.stream_id;
    node.mapped() = std::move(stream);
    s->streams_.insert(std::move(node));
  } else {
    s->streams_.emplace(frame->hd.stream_id, std::move(stream));
  }
  s->update_streams_gauge(1);
  s->idle_armed_ = false;
  s->conn_.arm_timer_within(1000);  // watches the streams' deadlines and windows
  return 0;
}

int H2Session::on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name,
                         std::size_t namelen, const std::uint8_t* value, std::size_t valuelen,
                         std::uint8_t, void* user) {
  auto* s = static_cast<H2Session*>(user);
  H2Stream* st = s->find(frame->hd.stream_id);
  if (!st) return 0;
  int rc = st->on_header(std::string_view(reinterpret_cast<const char*>(name), namelen),
                         std::string_view(reinterpret_cast<const char*>(value), valuelen));
  if (rc != 0) {
    // An HPACK bomb or an oversized list: decoding stops here for the whole connection.
    s->fail(H2Error::header_list_too_large, NGHTTP2_ENHANCE_YOUR_CALM);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

int H2Session::on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* s = static_cast<H2Session*>(user);
  switch (frame->hd.type) {
    case NGHTTP2_PING:
      if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) ++s->pings_;
      return 0;
    case NGHTTP2_SETTINGS:
      if (!(frame->hd.flags & NGHTTP2_FLAG_ACK)) ++s->settings_;
      return 0;
    case NGHTTP2_RST_STREAM: {
      ++s->resets_;
      // Rapid reset (CVE-2023-44487): each stream a client cancels may have started an
      // upstream request. A bucket of kResetBurst, refilled kResetRate a second.
      std::uint64_t now = uv_now(s->conn_.worker().loop());
      double tokens = s->reset_tokens_ + (now - s->reset_at_ms_) * kResetRate / 1000.0;
      s->reset_tokens_ = std::min(tokens, kResetBurst);
      s->reset_at_ms_ = now;
      if (s->reset_tokens_ < 1) {
        s->fail(H2Error::rapid_reset, NGHTTP2_ENHANCE_YOUR_CALM);
        return 0;
      }
      s->reset_tokens_ -= 1;
      return 0;
    }
    case NGHTTP2_HEADERS: {
      H2Stream* st = s->find(frame->hd.stream_id);
      if (!st) return 0;
      bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
      if (!st->headers_done_)
        st->on_headers_end(end);
      else if (end)
        st->on_end_stream();  // trailers
      return 0;
    }
    case NGHTTP2_DATA: {
      H2Stream* st = s->find(frame->hd.stream_id);
      if (st && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) st->on_end_stream();
      return 0;
    }
    default:
      return 0;
  }
}

int H2Session::on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t stream_id,
                             const std::uint8_t* data, std::size_t len, void* user) {
  auto* s = static_cast<H2Session*>(user);
  H2Stream* st = s->find(stream_id);
  if (!st || st->done()) {
    nghttp2_session_consume(session, stream_id, len);  // discarded: give the window back
    return 0;
  }
  st->on_data(reinterpret_cast<const char*>(data), len);
  return 0;
}

int H2Session::on_stream_close(nghttp2_session*, std::int32_t stream_id, std::uint32_t, void* user) {
  auto* s = static_cast<H2Session*>(user);
  H2Stream* st = s->find(stream_id);
  if (!st) return 0;
  st->on_closed();
  s->retire(st);
  return 0;
}

int H2Session::on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* s = static_cast<H2Session*>(user);
  if (frame->hd.type == NGHTTP2_RST_STREAM && frame->rst_stream.error_code == NGHTTP2_REFUSED_STREAM) {
    if (++s->refused_streams_ > kMaxRefusedStreams)
      s->fail(H2Error::too_many_streams, NGHTTP2_ENHANCE_YOUR_CALM);
    return 0;
  }
  if (frame->hd.type == NGHTTP2_GOAWAY && !s->failed_ &&
      frame->goaway.error_code != NGHTTP2_NO_ERROR) {
    // nghttp2's own verdict: the reset rate limit, or a protocol violation.
    s->failed_ = true;
    std::string_view why(reinterpret_cast<const char*>(frame->goaway.opaque_data),
                         frame->goaway.opaque_data_len);
    if (why.find("max concurrent streams") != std::string_view::npos)
      s->count(H2Error::too_many_streams);
    else
      s->count(s->resets_ >= 1000 ? H2Error::rapid_reset : H2Error::protocol_error);
    s->want_close_ = true;
  }
  if (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) {
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
      H2Stream* st = s->find(frame->hd.stream_id);
      // The response is complete while the client is still sending: it may stop (RFC 9113 8.1).
      if (st && st->finished_ && !st->closed_ &&
          !(nghttp2_session_get_stream_remote_close(s->session_, frame->hd.stream_id)))
        nghttp2_submit_rst_stream(s->session_, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_NO_ERROR);
    }
  }
  return 0;
}

int H2Session::on_invalid_frame(nghttp2_session*, const nghttp2_frame*, int, void*) { return 0; }

}  // namespace bulwark
