#include "upstream/connection.h"

#include <algorithm>

#include "core/log.h"
#include "net/listener.h"
#include "net/socket_read.h"
#include "net/tls.h"
#include "upstream/pool.h"

namespace bulwark {

namespace {
UpstreamConnection* self(llhttp_t* p) { return static_cast<UpstreamConnection*>(p->data); }
// The worker's shared read buffer; set by the worker before its loop runs.
thread_local char* t_read_buffer = nullptr;
}  // namespace

void set_upstream_read_buffer(char* buffer) { t_read_buffer = buffer; }
char* upstream_read_buffer() { return t_read_buffer; }

const llhttp_settings_t& UpstreamConnection::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t x;
    llhttp_settings_init(&x);
    x.on_message_begin = on_message_begin;
    x.on_status = on_status;
    x.on_header_field = on_header_field;
    x.on_header_value = on_header_value;
    x.on_headers_complete = on_headers_complete;
    x.on_body = on_body;
    x.on_message_complete = on_message_complete;
    return x;
  }();
  return s;
}

UpstreamConnection::UpstreamConnection(ConnectionPool& pool, uv_loop_t* loop) : pool_(pool) {
  idle_hook_.owner = this;
  uv_tcp_init(loop, &tcp_);
  uv_timer_init(loop, &timer_);
  tcp_.data = this;
  timer_.data = this;
  open_handles_ = 2;
  llhttp_init(&parser_, HTTP_RESPONSE, &settings());
  parser_.data = this;
}

void UpstreamConnection::connect(const sockaddr* address, std::uint64_t timeout_ms) {
  state_ = State::connecting;
  uv_tcp_nodelay(&tcp_, 1);
  int rc = uv_tcp_connect(&connect_req_, &tcp_, address, on_connect);
  // A synchronous failure is reported from the timer, never from inside connect().
  uv_timer_start(&timer_, on_timer, rc == 0 ? timeout_ms : 0, 0);
  if (rc != 0) connected_ = false, keep_alive_ = false, response_done_ = true, connect_error_ = rc;
}

void UpstreamConnection::on_connect(uv_connect_t* req, int status) {
  auto* c = static_cast<UpstreamConnection*>(req->handle->data);
  if (c->state_ == State::closing) return;
  auto& stats = c->pool_.stats();
  if (status < 0) {
    stats.connects[static_cast<int>(ConnectResult::failure)].add();
    c->fail(UpstreamError::connect_failure);
    return;
  }
  stats.connects[static_cast<int>(ConnectResult::success)].add();
  c->reading_ = true;
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp_), no_read_buffer, on_read) != 0) {
    c->fail(UpstreamError::reset);
    return;
  }
  if (c->pool_.config().tls) {
    c->start_tls();  // connected once the handshake is done; connect_timeout covers it
    return;
  }
  c->on_ready();
}

void UpstreamConnection::on_ready() {
  connected_ = true;
  uv_timer_stop(&timer_);
  state_ = State::active;
  if (client_) client_->on_upstream_connected();
}

void UpstreamConnection::attach(UpstreamClient* client, bool head_request) {
  client_ = client;
  head_request_ = head_request;
  response_started_ = false;
  response_done_ = false;
  interim_ = false;
  keep_alive_ = true;
  content_length_ = 0;
  phase_ = Phase::head;
  plain_ = false;
  head_scan_.start(pool_.config().max_response_header_bytes);
  trailers_.clear();
  error_detail_.clear();
  paused_us_ = 0;
  if (read_paused_) paused_since_us_ = uv_hrtime() / 1000;
  llhttp_init(&parser_, HTTP_RESPONSE, &settings());
  parser_.data = this;
  if (state_ == State::idle) {
    reused_ = true;
    pool_.on_active(this);
    state_ = State::active;
  }
  if (read_paused_) resume_reading();
}

std::size_t UpstreamConnection::queued_bytes() const {
  return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&tcp_)) +
         tls_early_.size();
}

bool UpstreamConnection::flush() {
  if (state_ == State::closing) {
    out_.clear();
    return false;
  }
  if (connect_error_ != 0) {
    // The connect failed at once (no socket): the timer reports it as what it is, where a
    // write on the socket-less handle would have reported a reset.
    out_.clear();
    return true;
  }
  int rc;
  if (pool_.config().tls) {
    if (!tls_ || !tls_->handshake_done()) {
      // Sent once the handshake is done (the pieces may point into a read buffer: copied).
      out_.append_to(tls_early_);
      out_.clear();
      return true;
    }
    rc = out_.flush(*tls_, reinterpret_cast<uv_stream_t*>(&tcp_), on_write);
  } else {
    TurnWrites* turn = TurnWrites::current();
    if (turn && turn->hold(*this, out_)) return true;
    if (holding() && !send_held()) return false;  // what was held goes first
    rc = out_.flush(reinterpret_cast<uv_stream_t*>(&tcp_), on_write);
  }
  if (rc != 0) {
    fail(UpstreamError::reset);
    return false;
  }
  return true;
}

bool UpstreamConnection::send_held() {
  if (send_held_bytes(reinterpret_cast<uv_stream_t*>(&tcp_), on_write) != 0) {
    fail(UpstreamError::reset);
    return false;
  }
  return true;
}

void UpstreamConnection::on_write(uv_write_t* req, int status) {
  auto* c = static_cast<UpstreamConnection*>(req->handle->data);
  free_queued_write(req);
  if (status < 0 || c->state_ == State::closing) return;  // the read side reports failures
  if (c->client_ && c->queued_bytes() < kLowWater) c->client_->on_upstream_drained();
}

void UpstreamConnection::pause_reading() {
  if (state_ == State::closing || !reading_ || read_paused_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  read_paused_ = true;
  paused_since_us_ = uv_hrtime() / 1000;
}

std::uint64_t UpstreamConnection::read_paused_us() const {
  return paused_us_ + (read_paused_ ? uv_hrtime() / 1000 - paused_since_us_ : 0);
}

void UpstreamConnection::resume_reading() {
  if (state_ == State::closing || !read_paused_) return;
  read_paused_ = false;
  paused_us_ += uv_hrtime() / 1000 - paused_since_us_;
  uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), no_read_buffer, on_read);
}

void UpstreamConnection::start_tunnel() { state_ = State::tunnel; }

void UpstreamConnection::release(bool reusable) {
  client_ = nullptr;
  if (state_ == State::closing) return;
  // Request bytes still held (a response that came before the whole request went): the
  // connection is not left in a known state.
  if (!reusable || !keep_alive_ || !response_done_ || state_ != State::active || holding()) {
    close();
    return;
  }
  state_ = State::idle;
  if (read_paused_) resume_reading();
  pool_.on_idle(this);  // the pool's timer closes it after idle_timeout
}

void UpstreamConnection::close() {
  if (state_ == State::closing) return;
  bool was_idle = state_ == State::idle;
  if (tls_ && tls_->handshake_done()) {
    // close_notify, best effort; it also keeps the pool's session resumable (OpenSSL marks
    // the session of a connection freed without one as not resumable).
    tls_->shutdown();
    send_tls_output(*tls_, reinterpret_cast<uv_stream_t*>(&tcp_), on_write);
  }
  // Held bytes were written as far as the request path knows: they go before the close.
  send_held_bytes(reinterpret_cast<uv_stream_t*>(&tcp_), on_write);
  state_ = State::closing;
  client_ = nullptr;
  pool_.on_closed(this, was_idle);
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_close);
}

void UpstreamConnection::on_close(uv_handle_t* handle) {
  auto* c = static_cast<UpstreamConnection*>(handle->data);
  if (--c->open_handles_ == 0) delete c;
}

void UpstreamConnection::fail(UpstreamError error) {
  if (error == UpstreamError::reset && tls_ && tls_->handshake_done() && !tls_confirmed_) {
    // TLS 1.3: our handshake was done, but not a byte came from the server since: it refused
    // the handshake (e.g. our client certificate), and its reset may have taken the alert
    // with it (a write or a read then fails). A handshake failure, not a reset.
    tls_confirmed_ = true;  // counted once
    tls_failed(!tls_->error().empty() ? tls_->error()
                                      : "the server closed the connection right after the "
                                        "handshake (did it refuse the client certificate?)");
    return;
  }
  UpstreamClient* c = client_;
  close();
  if (error != UpstreamError::protocol) error_detail_.clear();
  if (c) c->on_upstream_error(error, error_detail_);  // the string lives until on_close
}

void UpstreamConnection::protocol_error(std::string_view detail) {
  if (detail.data() != error_detail_.data()) error_detail_.assign(detail);
  if (error_detail_.empty()) error_detail_ = "invalid response";
  fail(UpstreamError::protocol);
}

void UpstreamConnection::on_timer(uv_timer_t* timer) {
  auto* c = static_cast<UpstreamConnection*>(timer->data);
  if (c->state_ == State::connecting) {
    // A synchronous connect failure (attach() has reset the other flags since).
    if (c->connect_error_ != 0) {
      if (out_of_local_resources(c->connect_error_)) {
        c->fail(UpstreamError::local_resources);  // no socket: not the endpoint's failure
        return;
      }
      c->pool_.stats().connects[static_cast<int>(ConnectResult::failure)].add();
      c->fail(UpstreamError::connect_failure);
    } else if (c->tls_) {
      // Connected, but the handshake did not finish in time.
      c->tls_failed("the handshake timed out", UpstreamError::connect_timeout);
    } else {
      c->pool_.stats().connects[static_cast<int>(ConnectResult::timeout)].add();
      c->fail(UpstreamError::connect_timeout);
    }
  }
}

// The socket is readable (net/socket_read.h): read into the worker's buffer with recv.
void UpstreamConnection::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t*) {
  auto* c = static_cast<UpstreamConnection*>(stream->data);
  if (c->state_ == State::closing) return;
  if (nread == UV_ENOBUFS) {
    nread = drain_socket(
        stream, t_read_buffer, kReadBufferSize,
        [c](const char* data, std::size_t n) {
          if (c->tls_)
            c->tls_input(data, n);
          else
            c->handle_data(data, n);
        },
        [c] { return c->state_ != State::closing && !c->read_paused_; });
    if (c->state_ == State::closing) return;
  }
  if (nread >= 0) return;
  if (c->tls_ && !c->tls_->handshake_done()) {
    c->tls_failed("the server closed the connection during the handshake");
    return;
  }
  c->on_eof();
}

void UpstreamConnection::on_eof() {
  UpstreamConnection* c = this;
  // EOF or error.
  if (c->state_ == State::idle || !c->client_) {
    c->close();
    return;
  }
  // (A response after a plain head is never delimited by the close.)
  if (c->state_ == State::active && c->response_started_ && !c->plain_ &&
      llhttp_message_needs_eof(&c->parser_)) {
    // A response delimited by the connection's end: EOF completes it.
    llhttp_errno_t e = llhttp_finish(&c->parser_);
    if ((e == HPE_OK || e == HPE_PAUSED) && c->response_done_) {
      c->keep_alive_ = false;
      c->client_->on_upstream_complete();
      return;
    }
  }
  c->fail(UpstreamError::reset);
}

// Each read is cut into segments by phase. A plain head whole at the start of a read (the
// usual response: http/response_head.h) is read in one pass, and its Content-Length body
// counted here. Any other head goes through ResponseHeadScanner before llhttp reads it, so
// llhttp never sees a byte of a malformed or oversized head. A chunked body is decoded by
// ChunkedDecoder (http/chunked.h) instead of llhttp, for strict framing and the whole
// extension grammar; other bodies are read by llhttp.
void UpstreamConnection::handle_data(const char* data, std::size_t len) {
  if (state_ == State::idle || !client_) {
    close();  // bytes nobody asked for: the connection can't be trusted any more
    return;
  }
  if (state_ == State::tunnel) {
    UpstreamClient* c = client_;
    c->on_upstream_tunnel_data(data, len);
    c->on_upstream_batch_end();
    return;
  }
  response_started_ = true;
  const char* end = data + len;
  for (const char* p = data; p < end;) {
    auto avail = static_cast<std::size_t>(end - p);
    std::size_t n = avail;
    bool more = true;
    if (phase_ == Phase::head && head_scan_.at_start()) {
      if (std::size_t h = parse_plain_response_head(
              p, avail, static_cast<std::size_t>(pool_.config().max_response_header_bytes),
              head_request_, headers_, status_text_, plain_head_)) {
        p += h;
        if (!on_plain_head(p == end)) return;
        continue;
      }
    }
    if (phase_ == Phase::length_body) {
      auto take = static_cast<std::size_t>(std::min<std::uint64_t>(avail, body_left_));
      client_->on_upstream_body(p, take);
      body_left_ -= take;
      p += take;
      if (!client_) return;
      if (body_left_ == 0) {
        plain_complete(p == end);
        return;
      }
      continue;
    }
    if (phase_ == Phase::head) {
      bool cr_before = head_scan_.pending_cr();
      if (head_scan_.scan(p, avail, n) == ResponseHeadScanner::Result::error) {
        protocol_error(head_scan_.error());
        return;
      }
      if (head_scan_.saw_bare_lf()) {
        ResponseHeadScanner::add_crs(p, n, cr_before, head_copy_);
        more = parse(head_copy_.data(), head_copy_.size(), p + n, end);
      } else {
        more = parse(p, n, nullptr, end);
      }
    } else if (phase_ == Phase::chunked_body) {
      if (!decode_chunked(p, end)) return;
      continue;
    } else {
      more = parse(p, n, nullptr, end);
    }
    if (!more) return;
    if (n == 0) {
      // A scanner saw the end of a head or body where llhttp did not: never guess.
      protocol_error("invalid response framing");
      return;
    }
    p += n;
  }
  if (client_) client_->on_upstream_batch_end();
}

bool UpstreamConnection::parse(const char* data, std::size_t len, const char* copied_until,
                               const char* read_end) {
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (err == HPE_OK) return true;
  UpstreamClient* c = client_;
  if (err == HPE_PAUSED && phase_ == Phase::chunked_body && !response_done_) {
    // Paused at the end of a head with a chunked body: the decoder reads on from there. The
    // head scanner ended `data` with the head, so llhttp stopped at its end.
    if (llhttp_get_error_pos(&parser_) == data + len) return true;
    protocol_error("invalid response framing");
    return false;
  }
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    // The response is complete. What follows it in the read starts where llhttp stopped, or,
    // when llhttp read a copy of a head (always to its end), where that head ends in the read.
    const char* pos = llhttp_get_error_pos(&parser_);
    const char* rest = copied_until ? copied_until : pos ? pos : data + len;
    auto rest_len = static_cast<std::size_t>(read_end - rest);
    bool upgraded = parser_.upgrade && parser_.status_code == 101;
    if (!upgraded && rest_len > 0) keep_alive_ = false;  // bytes after the response
    if (!c) return false;
    c->on_upstream_complete();  // may release or close this connection
    if (upgraded && rest_len > 0 && state_ == State::tunnel && client_) {
      client_->on_upstream_tunnel_data(rest, rest_len);
      client_->on_upstream_batch_end();
    }
    return false;
  }
  if (error_detail_.empty()) {
    const char* why = llhttp_get_error_reason(&parser_);
    error_detail_.assign("invalid response: ").append(why && *why ? why : llhttp_errno_name(err));
  }
  protocol_error(error_detail_);
  return false;
}

bool UpstreamConnection::decode_chunked(const char*& p, const char* end) {
  // Stops when the client lets go of the connection (it is closing then).
  while (client_) {
    switch (chunked_.next(p, end)) {
      case ChunkedDecoder::Event::need_more:
        return true;
      case ChunkedDecoder::Event::chunk_start:
        client_->on_upstream_chunk_header(chunked_.chunk_size());
        break;
      case ChunkedDecoder::Event::data:
        client_->on_upstream_body(chunked_.data().data(), chunked_.data().size());
        break;
      case ChunkedDecoder::Event::chunk_end:
        client_->on_upstream_chunk_complete();
        break;
      case ChunkedDecoder::Event::trailer:
        trailers_.append_name(chunked_.trailer_name().data(), chunked_.trailer_name().size());
        trailers_.append_value(chunked_.trailer_value().data(), chunked_.trailer_value().size());
        break;
      case ChunkedDecoder::Event::done:
        response_done_ = true;
        // llhttp, paused at the end of the head, still knows what the head said.
        keep_alive_ = (plain_ ? plain_head_.keep_alive : llhttp_should_keep_alive(&parser_)) &&
                      p == end;  // bytes after it: no
        client_->on_upstream_complete();  // may release or close this connection
        return false;
      case ChunkedDecoder::Event::error:
        switch (chunked_.error_kind()) {
          case ChunkedDecoder::ErrorKind::line_too_long:
            protocol_error("a chunk-size line exceeds the upstream's max_response_header_bytes");
            break;
          case ChunkedDecoder::ErrorKind::trailers_too_large:
            protocol_error("the trailer section exceeds the upstream's max_response_header_bytes");
            break;
          case ChunkedDecoder::ErrorKind::syntax:
            protocol_error(chunked_.error());
            break;
        }
        return false;
    }
  }
  return false;
}

const char* UpstreamConnection::check_head() const {
  // llhttp 8.1 accepts field names with spaces, and empty ones, in responses.
  for (std::size_t i = 0; i < headers_.size(); ++i)
    if (!is_token(headers_.name(i))) return "a header field name is not a token";
  int status = parser_.status_code;
  // llhttp only switches protocols when the 101 says to what (Upgrade, Connection: upgrade).
  if (status == 101 && !parser_.upgrade) return "a 101 response without Upgrade";
  bool body_follows = status >= 200 && status != 204 && status != 304 && !head_request_;
  if (!body_follows) return nullptr;  // framing headers do not matter
  int te = headers_.count("transfer-encoding");
  if (te == 0) return nullptr;
  if (parser_.http_minor == 0) return "Transfer-Encoding in an HTTP/1.0 response";
  if (parser_.flags & F_CONTENT_LENGTH) return "both Content-Length and Transfer-Encoding";
  // Only chunked is decoded: a response with another coding would reach the client without
  // it (Transfer-Encoding is hop-by-hop), its bytes mistaken for the content.
  std::string_view v = headers_.get("transfer-encoding");
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  // llhttp must have read it as chunked too ("chunked\t" is not chunked to llhttp 8.1).
  if (te > 1 || !iequals(v, "chunked") || !(parser_.flags & F_CHUNKED))
    return "a transfer coding other than chunked";
  return nullptr;
}

int UpstreamConnection::on_message_begin(llhttp_t* p) {
  auto* c = self(p);
  c->headers_.clear();
  c->status_text_.clear();
  c->interim_ = false;
  return 0;
}

int UpstreamConnection::on_status(llhttp_t* p, const char* at, std::size_t len) {
  self(p)->status_text_.append(at, len);
  return 0;
}

int UpstreamConnection::on_header_field(llhttp_t* p, const char* at, std::size_t len) {
  self(p)->headers_.append_name(at, len);
  return 0;
}

int UpstreamConnection::on_header_value(llhttp_t* p, const char* at, std::size_t len) {
  self(p)->headers_.append_value(at, len);
  return 0;
}

int UpstreamConnection::on_headers_complete(llhttp_t* p) {
  auto* c = self(p);
  c->content_length_ = p->content_length;
  if (!c->client_) return -1;
  if (const char* why = c->check_head()) {
    c->error_detail_ = why;
    return -1;
  }
  int status = p->status_code;
  if (status < 200 && status != 101) {
    c->interim_ = true;
    c->head_scan_.next_head();  // the final head follows, within the same byte budget
    c->client_->on_upstream_interim(*c);
    return 1;  // no content
  }
  c->client_->on_upstream_headers(*c);
  if (status == 101) return 0;  // llhttp stops for the upgrade itself
  if (c->head_request_ || status == 204 || status == 304) return 1;
  if (!(p->flags & F_CHUNKED)) {
    c->phase_ = Phase::body;
    return 0;
  }
  c->start_chunked();  // llhttp stops here; decode_chunked() reads the body
  return HPE_PAUSED;
}

void UpstreamConnection::start_chunked() {
  // A chunk-size line and the trailer section are bounded like the head; the number of
  // trailer fields only by their bytes.
  phase_ = Phase::chunked_body;
  ChunkedDecoder::Limits limits;
  auto bytes = static_cast<std::size_t>(pool_.config().max_response_header_bytes);
  limits.max_line = bytes;
  limits.max_trailer_bytes = bytes;
  limits.max_trailers = bytes;
  chunked_.reset(limits);
}

bool UpstreamConnection::on_plain_head(bool at_end) {
  plain_ = true;
  content_length_ = plain_head_.content_length;
  client_->on_upstream_headers(*this);
  if (!client_) return false;
  int status = plain_head_.status;
  if (head_request_ || status == 204 || status == 304 ||
      (!plain_head_.chunked && plain_head_.content_length == 0)) {
    plain_complete(at_end);
    return false;
  }
  if (plain_head_.chunked) {
    start_chunked();
  } else {
    phase_ = Phase::length_body;
    body_left_ = plain_head_.content_length;
  }
  return true;
}

void UpstreamConnection::plain_complete(bool at_end) {
  response_done_ = true;
  keep_alive_ = plain_head_.keep_alive && at_end;  // bytes after the response: not reused
  client_->on_upstream_complete();  // may release or close this connection
}

int UpstreamConnection::on_body(llhttp_t* p, const char* at, std::size_t len) {
  auto* c = self(p);
  if (c->client_) c->client_->on_upstream_body(at, len);
  return 0;
}

int UpstreamConnection::on_message_complete(llhttp_t* p) {
  auto* c = self(p);
  if (c->interim_) {
    c->interim_ = false;
    return 0;
  }
  c->keep_alive_ = llhttp_should_keep_alive(p);
  c->response_done_ = true;
  if (p->upgrade && p->status_code == 101) return 0;  // llhttp pauses for the upgrade itself
  return HPE_PAUSED;
}

}  // namespace bulwark
