// The parsing side of a ClientConnection: llhttp reads the request line and header fields, with the
// checks llhttp 8.1 does not make added in its callbacks; execute() stops it at the end of each
// head to check how the head ended and to start the request; chunked bodies are decoded by
// ChunkedDecoder (http/chunked.h), Content-Length bodies by llhttp. What is refused, and why,
// is in docs/conformance.md.
#include <cstring>

#include "http/chunked.h"
#include "http/headers.h"
#include "pipeline/client_connection.h"
#include "worker.h"

namespace bulwark {

namespace {

ClientConnection* self(llhttp_t* p) { return static_cast<ClientConnection*>(p->data); }

// Whether llhttp's "invalid method" stop is at a method token followed by a space (a
// request line with a method llhttp does not know), rather than in random bytes.
bool at_method_token(const char* begin, const char* error, const char* end) {
  if (!error || error < begin || error > end) return false;
  const char* start = error;
  while (start > begin && is_tchar(static_cast<unsigned char>(start[-1]))) --start;
  const char* stop = error;
  while (stop < end && is_tchar(static_cast<unsigned char>(*stop))) ++stop;
  return stop > start && stop < end && *stop == ' ' && (start == begin || start[-1] == '\n');
}

}  // namespace

const llhttp_settings_t& ClientConnection::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t x;
    llhttp_settings_init(&x);
    x.on_message_begin = cb_message_begin;
    x.on_url = cb_url;
    x.on_url_complete = cb_url_complete;
    x.on_header_field = cb_header_field;
    x.on_header_field_complete = cb_header_field_complete;
    x.on_header_value = cb_header_value;
    x.on_header_value_complete = cb_header_value_complete;
    x.on_headers_complete = cb_headers_complete;
    x.on_body = cb_body;
    x.on_message_complete = cb_message_complete;
    return x;
  }();
  return s;
}

// Bytes after an upgrade request belong to the new protocol only if the upstream switches
// (101). Until it answers they are held, not forwarded: an upstream that refuses the upgrade
// would read them as a request of its own that Bulwark never parsed, routed or checked
// (request smuggling). After a refusal the connection closes and they are dropped.
void ClientConnection::after_upgrade_request(const char* data, std::size_t len) {
  if (phase_ == Phase::request && ex_ && ex_->upgrade) {
    pending_input_.append(data, len);
    if (pending_input_.size() > kHighWater) pause_reading();
    return;
  }
  // llhttp parses nothing more after a request it flagged as an upgrade. One Bulwark does not
  // tunnel (answered locally, or an Upgrade field without a value) ends the connection after
  // its response; what follows is dropped, never parsed from llhttp's stopped state.
  if (phase_ == Phase::request)
    close_after_response_ = true;
  else
    close_gracefully();
}

void ClientConnection::forward_held_input() {
  if (pending_input_.empty()) return;
  x().bytes_in += pending_input_.size();
  x().upstream_add(pending_input_.data(), pending_input_.size(), /*borrowed=*/false);
  pending_input_.clear();
}

void ClientConnection::execute(const char* data, std::size_t len) {
  in_execute_ = true;
  const char* end = data + len;
  while (!done()) {
    if (chunked_body_) {
      if (!decode_chunked(data, end)) break;
      // llhttp stayed paused at the end of the head: ready it for the next message.
      llhttp_reset(&parser_);
      input_tail_ = '\n';
      bool upgrade = message_complete() == 0;
      if (done()) break;
      auto rest_len = static_cast<std::size_t>(end - data);
      if (upgrade) {
        after_upgrade_request(data, rest_len);
        break;
      }
      if (phase_ == Phase::idle) {  // answered while parsing: go on with the next request
        if (rest_len == 0) break;
        continue;
      }
      pending_input_.append(data, rest_len);
      if (pending_input_.size() > kHighWater) pause_reading();
      break;
    }
    // A value piece that ended exactly at the end of the previous input continues here.
    if (value_open_ && value_piece_end_ == exec_end_) value_piece_end_ = nullptr;
    exec_end_ = end;
    llhttp_errno_t err = llhttp_execute(&parser_, data, static_cast<std::size_t>(end - data));
    if (done()) break;
    if (err == HPE_OK) {
      if (end > data) input_tail_ = end[-1];
      break;
    }
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
      const char* rest = llhttp_get_error_pos(&parser_);
      if (!rest) rest = end;
      auto rest_len = static_cast<std::size_t>(end - rest);
      if (head_paused_) {
        head_paused_ = false;
        if (!on_head_parsed(data, rest)) break;
        data = rest;
        continue;  // llhttp goes on with the body (or the message end), or the decoder does
      }
      if (err == HPE_PAUSED && phase_ == Phase::idle) {
        // The request was answered while parsing (a local reply): go on with the next.
        llhttp_resume(&parser_);
        data = rest;
        if (rest_len == 0) break;
        continue;
      }
      if (err == HPE_PAUSED_UPGRADE) {
        after_upgrade_request(rest, rest_len);
        break;
      }
      pending_input_.append(rest, rest_len);
      if (pending_input_.size() > kHighWater) pause_reading();
      break;
    }
    // A protocol error: 400 (or the limit that was hit), then close.
    if (error_reason_set_) {
      local_reply(error_reason_, error_detail_, true, error_status_);
    } else if (err == HPE_INVALID_METHOD &&
               at_method_token(data, llhttp_get_error_pos(&parser_), end)) {
      // A method token llhttp 8.1 does not know (it parses a fixed list; see
      // docs/conformance.md): not implemented rather than malformed.
      local_reply(Reason::bad_request, "request method not supported", true, 501);
    } else {
      const char* why = llhttp_get_error_reason(&parser_);
      local_reply(Reason::bad_request, why ? why : "malformed request", true);
    }
    break;
  }
  in_execute_ = false;
  if (phase_ == Phase::head && !head_timer_armed_ && !done()) {
    head_timer_armed_ = true;
    arm_timer(listener_.view->config->header_timeout_ms);
  }
}

bool ClientConnection::on_head_parsed(const char* data, const char* body) {
  // llhttp takes any byte after the CR that ends the head ("\r\n\rX"): the head must end
  // with an empty line, CRLF (or a bare LF, RFC 9112 2.2).
  char last = body > data ? body[-1] : input_tail_;
  if (last != '\n') {
    local_reply(Reason::bad_request, "the request head does not end with an empty line", true);
    return false;
  }
  input_tail_ = '\n';
  x().bytes_in += head_bytes_;
  RequestStart start;
  start.method = parser_.method;
  start.http_major = parser_.http_major;
  start.http_minor = parser_.http_minor;
  start.upgrade = parser_.upgrade != 0;
  start.chunked = (parser_.flags & F_CHUNKED) != 0;
  start.has_content_length = (parser_.flags & F_CONTENT_LENGTH) != 0;
  start.content_length = parser_.content_length;
  x().start_request(start);
  if (done()) return false;
  llhttp_resume(&parser_);
  if (x().request_framing == BodyFraming::chunked) {
    chunked_body_ = true;
    ChunkedDecoder::Limits limits;
    limits.max_trailer_bytes = listener_.view->config->max_header_bytes;
    limits.max_trailers = listener_.view->config->max_headers;
    b().chunked.reset(limits);
    b().trailers.clear();
  }
  return true;
}

bool ClientConnection::decode_chunked(const char*& data, const char* end) {
  ChunkedDecoder& decoder = b().chunked;
  if (data < end) x().body_activity_ms = uv_now(worker_.loop());  // chunk lines count (body_idle)
  while (!done()) {
    const char* before = data;
    ChunkedDecoder::Event event = decoder.next(data, end);
    x().bytes_in += static_cast<std::uint64_t>(data - before);
    switch (event) {
      case ChunkedDecoder::Event::need_more:
        return false;
      case ChunkedDecoder::Event::chunk_start:
        // A chunk that cannot fit is refused at its size line, before any of it is read.
        if (decoder.chunk_size() > listener_.view->config->max_body_bytes - x().request_body_bytes) {
          chunked_body_ = false;
          local_reply(Reason::body_too_large,
                      "a chunk size takes the request body past the listener's max_body_bytes",
                      true);
          return false;
        }
        if (!x().pending_reply) x().upstream_add_chunk_header(decoder.chunk_size());
        break;
      case ChunkedDecoder::Event::data:
        if (!take_body(decoder.data().data(), decoder.data().size())) return false;
        break;
      case ChunkedDecoder::Event::chunk_end:
        if (!x().pending_reply) x().upstream_add("\r\n", 2, false);
        break;
      case ChunkedDecoder::Event::trailer:
        add_trailer(decoder.trailer_name(), decoder.trailer_value());
        break;
      case ChunkedDecoder::Event::done:
        chunked_body_ = false;
        return true;
      case ChunkedDecoder::Event::error:
        chunked_body_ = false;
        local_reply(decoder.error_kind() == ChunkedDecoder::ErrorKind::trailers_too_large
                        ? Reason::header_too_large
                        : Reason::bad_request,
                    decoder.error(), true);
        return false;
    }
  }
  return false;
}

void ClientConnection::add_trailer(std::string_view name, std::string_view value) {
  // Trailers never join the head (its views must stay valid, and a retry must not send them
  // as headers). Forwarded as trailers of the chunked upstream request, except what only the
  // head may carry: framing, routing, hop-by-hop fields and the ones Bulwark sets.
  if (x().pending_reply || !forwardable_trailer(b().headers, name)) return;
  b().trailers.append(name).append(": ").append(value).append("\r\n");
}

bool ClientConnection::count_head_bytes(std::size_t len) {
  head_bytes_ += len;
  if (head_bytes_ <= listener_.view->config->max_header_bytes) return true;
  error_reason_ = Reason::header_too_large;
  error_detail_ = "the request head exceeds the listener's max_header_bytes";
  error_reason_set_ = true;
  return false;
}

int ClientConnection::parse_error(Reason reason, const char* detail, int status) {
  error_reason_ = reason;
  error_detail_ = detail;
  error_status_ = status;
  error_reason_set_ = true;
  return -1;
}

int ClientConnection::cb_message_begin(llhttp_t* p) {
  auto* d = self(p);
  d->phase_ = Phase::head;
  d->x().start_ns = uv_hrtime();
  d->b().headers.clear();
  d->b().url.clear();
  d->value_open_ = false;
  d->header_count_ = 0;
  d->head_bytes_ = 0;
  d->head_timer_armed_ = false;  // armed in execute() only if the head does not arrive at once
  return 0;
}

int ClientConnection::cb_url(llhttp_t* p, const char* at, std::size_t len) {
  auto* d = self(p);
  if (!d->count_head_bytes(len)) return -1;
  // Debian's llhttp is built non-strict: it lets HTAB and FF through in the target, which
  // an upstream may take for the end of it. Any control byte or SP is refused here.
  for (std::size_t i = 0; i < len; ++i) {
    unsigned char c = static_cast<unsigned char>(at[i]);
    if (c <= 0x20 || c == 0x7f)
      return d->parse_error(Reason::bad_request, "control character in the request target");
  }
  d->b().url.append(at, len);
  return 0;
}

int ClientConnection::cb_url_complete(llhttp_t* p) {
  // llhttp takes "GET /" followed by a line end as an HTTP/0.9 request and would wait for
  // headers that such a client never sends: refuse it at once.
  if (p->http_major == 0 && p->http_minor == 9)
    return self(p)->parse_error(Reason::bad_request, "HTTP/0.9 request line");
  return 0;
}

int ClientConnection::cb_header_field(llhttp_t* p, const char* at, std::size_t len) {
  auto* d = self(p);
  d->value_open_ = false;
  if (!d->count_head_bytes(len + 4)) return -1;  // ": " and CRLF
  d->b().headers.append_name(at, len);
  return 0;
}

int ClientConnection::cb_header_field_complete(llhttp_t* p) {
  auto* d = self(p);
  const HeaderBlock& h = d->b().headers;
  // llhttp 8.1 lets spaces into field names ("Transfer Encoding") and passes empty ones.
  if (h.size() == 0 || !is_token(h.name(h.size() - 1)))
    return d->parse_error(Reason::bad_request, "invalid header field name");
  if (++d->header_count_ > d->listener_.view->config->max_headers)
    return d->parse_error(Reason::header_too_large,
                          "the request head has more than the listener's max_headers fields");
  return 0;
}

int ClientConnection::cb_header_value_complete(llhttp_t* p) {
  self(p)->b().headers.end_value();
  return 0;
}

int ClientConnection::cb_header_value(llhttp_t* p, const char* at, std::size_t len) {
  auto* d = self(p);
  if (!d->count_head_bytes(len)) return -1;
  // llhttp accepts obsolete line folding and reports the folded line as another piece of
  // the same value. A piece that follows one which did not end at the end of the input is
  // such a fold: refused (RFC 9112 5.2 allows either refusing or unfolding).
  bool folded = d->value_open_ && d->value_piece_end_ != nullptr;
  d->value_open_ = true;
  d->value_piece_end_ = at + len;
  if (folded || std::memchr(at, '\n', len) || std::memchr(at, '\r', len)) {
    d->error_reason_ = Reason::bad_request;
    d->error_detail_ = "obsolete line folding in a header value";
    d->error_reason_set_ = true;
    return -1;
  }
  d->b().headers.append_value(at, len);
  return 0;
}

int ClientConnection::cb_headers_complete(llhttp_t* p) {
  auto* d = self(p);
  d->value_open_ = false;
  // Stop here: execute() learns where the head ended (llhttp's callbacks are not told), checks
  // it, and runs Exchange::start_request() before llhttp or the chunked decoder reads the body.
  d->head_paused_ = true;
  return HPE_PAUSED;
}

int ClientConnection::cb_body(llhttp_t* p, const char* at, std::size_t len) {
  // Content-Length bodies only: chunked ones go through the chunked decoder.
  return self(p)->take_body(at, len) ? 0 : -1;
}

bool ClientConnection::take_body(const char* data, std::size_t len) {
  x().request_body_bytes += len;
  if (!chunked_body_) x().bytes_in += len;  // the decoder counts what it consumes
  if (x().request_body_bytes > listener_.view->config->max_body_bytes) {
    const char* detail = "request body exceeds the listener's max_body_bytes";
    if (chunked_body_)
      local_reply(Reason::body_too_large, detail, true);
    else
      parse_error(Reason::body_too_large, detail);
    return false;
  }
  x().forward_body(data, len);
  return true;
}

int ClientConnection::cb_message_complete(llhttp_t* p) { return self(p)->message_complete(); }

int ClientConnection::message_complete() {
  x().request_complete = true;
  // The attempt's round trip starts when the backend has the whole request: a client that
  // uploads slowly does not make the backend look slow to the load shedder.
  if (x().attempt_start_us && x().request_has_body()) x().attempt_start_us = uv_hrtime() / 1000;
  if (x().pending_reply) {
    x().pending_reply = false;
    local_reply(x().pending_reason, b().pending_detail, false, x().pending_status);
    return HPE_PAUSED;
  }
  x().end_request_body();
  if (x().request_upgrade) return 0;  // llhttp stops with HPE_PAUSED_UPGRADE
  return HPE_PAUSED;
}

}  // namespace bulwark
