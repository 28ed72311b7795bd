// One HTTP/2 request stream as a Downstream: its header list becomes the request head an
// Exchange starts from (":authority" as Host), DATA frames its body (re-framed chunked for an
// HTTP/1.1 upstream when no length is given), and the exchange's response goes back as
// HEADERS, DATA and trailing HEADERS. Local replies keep their reason header and problem body;
// to a gRPC client they are gRPC errors (HTTP 200, trailers-only, grpc-status).
#include <llhttp.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "admin/stats.h"
#include "http/grpc.h"
#include "pipeline/client_connection.h"
#include "pipeline/h2_session.h"
#include "worker.h"

namespace bulwark {

namespace {

// llhttp's HTTP methods (not RTSP's), by name; an unknown one is refused (400).
std::uint8_t method_from_name(std::string_view name, bool& known) {
  struct Method {
    std::string_view name;
    std::uint8_t id;
  };
  static const Method kMethods[] = {
#define BULWARK_METHOD(NUM, NAME, STRING) {#STRING, NUM},
      HTTP_METHOD_MAP(BULWARK_METHOD)
#undef BULWARK_METHOD
  };
  known = true;
  if (name == "GET") return HTTP_GET;
  if (name == "POST") return HTTP_POST;
  for (const Method& m : kMethods)
    if (m.name == name && m.id != HTTP_PRI) return m.id;
  known = false;
  return HTTP_GET;
}

// Hop-by-hop and connection-specific fields (RFC 9113 8.2.2): never in an HTTP/2 response.
bool connection_specific(std::string_view lower) {
  return lower == "connection" || lower == "keep-alive" || lower == "proxy-connection" ||
         lower == "transfer-encoding" || lower == "upgrade" || lower == "te" ||
         lower == "trailer";
}

}  // namespace

H2Stream::H2Stream(H2Session& session, std::int32_t id)
    : Downstream(session.connection().listener(), session.connection().worker()),
      session_(session),
      id_(id) {
  phase_ = Phase::head;
  begun_ms_ = uv_now(worker_.loop());
}

H2Stream::~H2Stream() { release_request(); }

void H2Stream::release_request() {
  end_exchange();
  if (buffers_) {
    worker_.release_buffers(buffers_);
    buffers_ = nullptr;
  }
}

void H2Stream::reuse(std::int32_t id) {
  id_ = id;
  // Downstream's request state, as a new stream has it.
  phase_ = Phase::head;
  method_ = HTTP_GET;
  minor_version_ = 1;
  close_after_response_ = false;
  draining_ = false;
  path_.clear();
  authority_.clear();
  scheme_.clear();
  method_name_.clear();
  cookie_.clear();
  header_bytes_ = header_count_ = 0;
  headers_done_ = grpc_ = closed_ = finished_ = paused_ = false;
  unconsumed_ = 0;
  head_pending_ = head_submitted_ = body_end_ = deferred_ = upstream_paused_ = false;
  has_body_ = true;
  body_.clear();
  body_sent_ = 0;
  clear_nv();
  trailer_storage_.clear();
  trailer_lengths_.clear();
  deadline_ms_ = 0;
  begun_ms_ = uv_now(worker_.loop());
}

std::string_view H2Stream::client_ip() const { return session_.connection().client_ip(); }
bool H2Stream::tls() const { return session_.connection().tls(); }
bool H2Stream::closing() const { return session_.connection().closing(); }
bool H2Stream::in_execute() const { return session_.in_recv(); }

void H2Stream::clear_nv() {
  nv_used_ = 0;  // the storage keeps its size: the next head is written over it
  nv_fields_.clear();
}

void H2Stream::add_nv(std::string_view name, std::string_view value) {
  std::size_t need = nv_used_ + name.size() + value.size();
  if (need > nv_storage_.size()) nv_storage_.resize(std::max(need, 2 * nv_storage_.size()));
  char* at = nv_storage_.data() + nv_used_;
  std::memcpy(at, name.data(), name.size());
  if (!value.empty()) std::memcpy(at + name.size(), value.data(), value.size());
  auto offset = static_cast<std::uint32_t>(nv_used_);
  auto name_length = static_cast<std::uint32_t>(name.size());
  nv_fields_.push_back(
      {offset, name_length, offset + name_length, static_cast<std::uint32_t>(value.size())});
  nv_used_ = need;
}

void H2Stream::add_nv_lower(std::string_view name, std::string_view value) {
  std::size_t at = nv_used_;
  add_nv(name, value);
  ascii_lower_in_place(nv_storage_.data() + at, name.size());
}

namespace {
// The field list handed to nghttp2 (which copies it), reused by every stream of the thread,
// so a response allocates none.
std::vector<nghttp2_nv>& nv_scratch(std::size_t n) {
  thread_local std::vector<nghttp2_nv> v;
  v.resize(n);
  return v;
}
}  // namespace

// Bulwark's own header lines ("Name: value\r\n"), as HTTP/2 fields (lower-case names).
void H2Stream::add_extra_lines(std::string_view extra) {
  while (!extra.empty()) {
    std::size_t eol = extra.find("\r\n");
    std::string_view line = extra.substr(0, eol);
    std::size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      std::string_view value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      add_nv_lower(line.substr(0, colon), value);
    }
    if (eol == std::string_view::npos) break;
    extra.remove_prefix(eol + 2);
  }
}

int H2Stream::on_header(std::string_view name, std::string_view value) {
  const ListenerConfig& lc = *listener_.view->config;
  header_bytes_ += name.size() + value.size() + 32;  // RFC 9113 6.5.2's accounting
  if (header_bytes_ > lc.max_header_bytes || ++header_count_ > lc.max_headers + 8) return -1;
  if (headers_done_) {  // request trailers: forwarded by the same rule as HTTP/1's
    if (!name.empty() && name[0] == ':') return 0;
    if (ex_ && x().request_framing == BodyFraming::chunked && !x().pending_reply &&
        forwardable_trailer(b().headers, name))
      b().trailers.append(name).append(": ").append(value).append("\r\n");
    return 0;
  }
  if (!name.empty() && name[0] == ':') {
    if (name == ":method") method_name_.assign(value);
    else if (name == ":path") path_.assign(value);
    else if (name == ":authority") authority_.assign(value);
    else if (name == ":scheme") scheme_.assign(value);
    return 0;
  }
  if (name == "content-type" && is_grpc_content_type(value)) grpc_ = true;
  if (name == "cookie") {
    // Cookie crumbs become one field for HTTP/1.1 (RFC 9113 8.2.3).
    if (!cookie_.empty()) cookie_.append("; ");
    cookie_.append(value);
    return 0;
  }
  HeaderBlock& h = b().headers;
  h.append_name(name.data(), name.size());
  h.append_value(value.data(), value.size());
  h.end_value();
  return 0;
}

void H2Stream::on_headers_end(bool end_stream) {
  headers_done_ = true;
  HeaderBlock& h = b().headers;
  // :authority is the request's Host (RFC 9113 8.3.1); a Host field that disagrees is
  // replaced by it.
  if (!authority_.empty() && h.get("host").empty()) {
    h.append_name("host", 4);
    h.append_value(authority_.data(), authority_.size());
    h.end_value();
  }
  if (!cookie_.empty()) {
    h.append_name("cookie", 6);
    h.append_value(cookie_.data(), cookie_.size());
    h.end_value();
    cookie_.clear();
  }
  b().url.assign(path_);
  x().start_ns = uv_hrtime();
  bool known = false;
  RequestStart start;
  start.method = method_from_name(method_name_, known);
  start.http_major = 1;
  start.http_minor = 1;
  start.defer_reply = false;
  std::string_view cl = h.get("content-length");
  if (!cl.empty()) {
    std::uint64_t n = 0;
    auto [p, ec] = std::from_chars(cl.data(), cl.data() + cl.size(), n);
    if (ec == std::errc() && p == cl.data() + cl.size()) {
      start.has_content_length = true;
      start.content_length = n;
    }
  } else if (!end_stream) {
    start.chunked = true;  // DATA frames without a declared length
  }
  if (end_stream) {
    start.has_content_length = false;
    start.content_length = 0;
    start.chunked = false;
  }
  if (!known || path_.empty()) {
    begin_request(HTTP_GET, 1);
    phase_ = Phase::request;
    x().request_complete = end_stream;
    local_reply(Reason::bad_request, known ? "missing :path" : "unknown method", true);
    return;
  }
  // The exchange reads the body's framing from the head; with no length, the body goes up
  // chunked (a Transfer-Encoding line is not allowed in HTTP/2, so the exchange sees none).
  if (start.chunked) {
    b().headers.append_name("transfer-encoding", 17);
    b().headers.append_value("chunked", 7);
    b().headers.end_value();
  }
  x().start_request(start);
  if (end_stream && !done()) on_end_stream();
}

void H2Stream::on_data(const char* data, std::size_t len) {
  unconsumed_ += len;
  if (!ex_ || !headers_done_) {
    consume();
    return;
  }
  Exchange& ex = x();
  ex.request_body_bytes += len;
  ex.bytes_in += len;
  if (ex.request_body_bytes > listener_.view->config->max_body_bytes) {
    local_reply(Reason::body_too_large, "request body exceeds the listener's max_body_bytes", true);
    return;
  }
  if (ex.request_framing == BodyFraming::chunked && !ex.pending_reply)
    ex.upstream_add_chunk_header(len);
  ex.forward_body(data, len);
  if (ex.request_framing == BodyFraming::chunked && !ex.pending_reply)
    ex.upstream_add("\r\n", 2, false);
  // The upstream connection copies what it cannot send at once; acknowledge what it took
  // unless it is backed up (then on_upstream_drained resumes us).
  if (ex.attempt.conn && ex.attempt.conn->queued_bytes() > kHighWater) paused_ = true;
  if (!paused_) consume();
}

void H2Stream::consume() {
  if (unconsumed_ == 0) return;
  if (closed_)
    nghttp2_session_consume_connection(session_.session(), unconsumed_);
  else
    nghttp2_session_consume(session_.session(), id_, unconsumed_);
  unconsumed_ = 0;
}

void H2Stream::resume_reading() {
  paused_ = false;
  consume();
  session_.request_flush();
}

void H2Stream::on_end_stream() {
  if (!ex_ || done() || x().request_complete) return;
  Exchange& ex = x();
  ex.request_complete = true;
  if (ex.attempt_start_us && ex.request_has_body()) ex.attempt_start_us = uv_hrtime() / 1000;
  ex.end_request_body();
  if (ex.attempt.conn) ex.attempt.conn->flush();
}

void H2Stream::on_timeout() {
  if (ex_ && !done()) x().on_request_timeout();
}

void H2Stream::arm_timer(std::uint64_t ms) {
  if (ms == 0) {
    deadline_ms_ = 0;
    return;
  }
  deadline_ms_ = uv_now(worker_.loop()) + ms;
  session_.stream_deadline_changed(deadline_ms_);
}

bool H2Stream::flush() {
  if (ex_ && ex_->attempt.conn) ex_->attempt.conn->flush();
  session_.request_flush();  // framed at the end of the loop turn, with the other streams'
  return !closing();
}

void H2Stream::send_continue() {
  nghttp2_nv nv[] = {{const_cast<std::uint8_t*>(reinterpret_cast<const std::uint8_t*>(":status")),
                      const_cast<std::uint8_t*>(reinterpret_cast<const std::uint8_t*>("100")), 7, 3,
                      NGHTTP2_NV_FLAG_NONE}};
  nghttp2_submit_headers(session_.session(), NGHTTP2_FLAG_NONE, id_, nullptr, nv, 1, nullptr);
}

void H2Stream::send_interim(const UpstreamStream& conn) {
  if (conn.status() == 101 || head_pending_ || head_submitted_) return;
  char status[4];
  std::to_chars(status, status + 3, conn.status());
  nghttp2_nv nv[] = {{const_cast<std::uint8_t*>(reinterpret_cast<const std::uint8_t*>(":status")),
                      reinterpret_cast<std::uint8_t*>(status), 7, 3, NGHTTP2_NV_FLAG_NONE}};
  nghttp2_submit_headers(session_.session(), NGHTTP2_FLAG_NONE, id_, nullptr, nv, 1, nullptr);
}

void H2Stream::send_response_head(const UpstreamStream& conn, std::string_view extra,
                                  std::string_view) {
  Exchange& ex = x();
  clear_nv();
  char status[4];
  std::to_chars(status, status + 3, ex.status);
  add_nv(":status", std::string_view(status, 3));
  const HeaderBlock& h = conn.headers();
  // is_hop_by_hop covers every connection-specific field of RFC 9113 8.2.2, in any case.
  bool has_connection_list = connection_lists_fields(h);
  for (std::size_t i = 0; i < h.size(); ++i) {
    std::string_view name = h.name(i);
    if (is_hop_by_hop(name)) continue;
    if (has_connection_list && listed_in_connection(h, name)) continue;
    add_nv_lower(name, h.value(i));
  }
  add_extra_lines(extra);
  if (conn.has_content_length() && ex.status != 204 && ex.status != 304 &&
      !(ex.status >= 100 && ex.status < 200)) {
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, conn.content_length());
    add_nv("content-length", std::string_view(digits, static_cast<std::size_t>(end - digits)));
  }
  ex.response_framing = conn.has_content_length() ? BodyFraming::content_length : BodyFraming::none;
  has_body_ = !(ex.head_request || ex.status == 204 || ex.status == 304);
  head_pending_ = true;
}

void H2Stream::submit_head() {
  head_pending_ = false;
  head_submitted_ = true;
  std::vector<nghttp2_nv>& nva = nv_scratch(nv_fields_.size());
  auto* base = reinterpret_cast<std::uint8_t*>(nv_storage_.data());
  for (std::size_t i = 0; i < nva.size(); ++i) {
    const NvField& f = nv_fields_[i];
    nva[i] = {base + f.name_offset, base + f.value_offset, f.name_length, f.value_length,
              NGHTTP2_NV_FLAG_NONE};
  }
  if (ex_) ex_->response_committed = true;
  if (!has_body_) {
    nghttp2_submit_response(session_.session(), id_, nva.data(), nva.size(), nullptr);
    return;
  }
  nghttp2_data_provider provider;
  provider.source.ptr = this;
  provider.read_callback = [](nghttp2_session*, std::int32_t, std::uint8_t* buf, std::size_t length,
                              std::uint32_t* flags, nghttp2_data_source* source,
                              void*) -> ssize_t {
    return static_cast<H2Stream*>(source->ptr)->read_data(buf, length, flags);
  };
  nghttp2_submit_response(session_.session(), id_, nva.data(), nva.size(), &provider);
}

ssize_t H2Stream::read_data(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) {
  std::size_t left = body_.size() - body_sent_;
  std::size_t n = std::min(left, length);
  if (n) std::memcpy(buf, body_.data() + body_sent_, n);
  body_sent_ += n;
  if (body_sent_ == body_.size()) {
    body_.clear();
    body_sent_ = 0;
  }
  if (upstream_paused_ && body_.size() - body_sent_ < kLowWater) {
    upstream_paused_ = false;
    if (ex_ && ex_->attempt.conn) ex_->attempt.conn->resume_reading();
  }
  if (body_end_ && body_.size() == body_sent_) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!trailer_lengths_.empty()) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      submit_trailers();
    }
    return static_cast<ssize_t>(n);
  }
  if (n == 0) {
    deferred_ = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return static_cast<ssize_t>(n);
}

void H2Stream::send_response_body(const char* data, std::size_t len) {
  if (!has_body_) return;
  body_.append(data, len);
  if (body_.size() - body_sent_ > kHighWater && ex_ && ex_->attempt.conn && !upstream_paused_) {
    upstream_paused_ = true;  // the client's window decides how fast the upstream is read
    ex_->attempt.conn->pause_reading();
  }
  if (deferred_) {
    deferred_ = false;
    nghttp2_session_resume_data(session_.session(), id_);
  }
}

void H2Stream::end_response(const HeaderBlock* trailers) {
  body_end_ = true;
  if (trailers && trailers->size() > 0) {
    trailer_storage_.clear();
    trailer_lengths_.clear();
    for (std::size_t i = 0; i < trailers->size(); ++i) {
      std::string_view name = trailers->name(i);
      std::size_t at = trailer_storage_.size();
      trailer_storage_.append(name);
      ascii_lower_in_place(trailer_storage_.data() + at, name.size());
      if (connection_specific(std::string_view(trailer_storage_).substr(at))) {
        trailer_storage_.resize(at);
        continue;
      }
      trailer_lengths_.push_back(static_cast<std::uint32_t>(name.size()));
      trailer_lengths_.push_back(static_cast<std::uint32_t>(trailers->value(i).size()));
      trailer_storage_.append(trailers->value(i));
    }
  }
  if (!has_body_ && !trailer_lengths_.empty()) trailer_lengths_.clear();
  if (deferred_) {
    deferred_ = false;
    nghttp2_session_resume_data(session_.session(), id_);
  }
}

void H2Stream::submit_trailers() {
  std::vector<nghttp2_nv>& nva = nv_scratch(trailer_lengths_.size() / 2);
  std::size_t at = 0;
  for (std::size_t i = 0; i < nva.size(); ++i) {
    nva[i].name = reinterpret_cast<std::uint8_t*>(trailer_storage_.data() + at);
    nva[i].namelen = trailer_lengths_[2 * i];
    at += nva[i].namelen;
    nva[i].value = reinterpret_cast<std::uint8_t*>(trailer_storage_.data() + at);
    nva[i].valuelen = trailer_lengths_[2 * i + 1];
    at += nva[i].valuelen;
    nva[i].flags = NGHTTP2_NV_FLAG_NONE;
  }
  nghttp2_submit_trailer(session_.session(), id_, nva.data(), nva.size());
}

bool H2Stream::drop_unsent_response() {
  if (head_submitted_) return false;
  head_pending_ = false;
  body_.clear();
  body_sent_ = 0;
  return true;
}

void H2Stream::local_reply(Reason reason, std::string_view detail, bool close_after, int status) {
  if (done()) return;
  Exchange& ex = x();
  if (ex.response_started && !drop_unsent_response()) {
    close();  // too late for a reply: the client must see the stream break
    return;
  }
  if (ex.attempt.conn) ex.detach_upstream(false);
  LocalReply reply;
  reply.reason = reason;
  reply.status = status;
  reply.detail = detail;
  if (ex.attempts > 1 && ex.reply_extra_len + 40 < sizeof ex.reply_extra) {
    int n = std::snprintf(ex.reply_extra + ex.reply_extra_len,
                          sizeof ex.reply_extra - ex.reply_extra_len, "x-bulwark-attempts: %d\r\n",
                          ex.attempts);
    ex.reply_extra_len += static_cast<std::size_t>(n);
  }
  reply.extra = std::string_view(ex.reply_extra, ex.reply_extra_len);
  reply.request_id = ex.request_id;
  reply.head_request = ex.head_request;
  std::string body;
  int code = local_reply_body(body, reply);
  ex.status = code;
  ex.reply_reason = reason;
  ex.local_reply_sent = true;
  RouteStats& rs = ex.route_stats ? *ex.route_stats : view().unmatched();
  rs.local_replies[static_cast<int>(reason)].add();
  clear_nv();
  char digits[8];
  if (grpc_) {
    // A gRPC error: HTTP 200 and the status in a trailers-only response.
    add_nv(":status", "200");
    add_nv("content-type", "application/grpc");
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, grpc_status_for(reason));
    add_nv("grpc-status", std::string_view(digits, static_cast<std::size_t>(end - digits)));
    add_nv("grpc-message", reason_title(reason));
    has_body_ = false;
  } else {
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, code);
    add_nv(":status", std::string_view(digits, static_cast<std::size_t>(end - digits)));
    add_nv("content-type", "application/problem+json");
    has_body_ = !ex.head_request;
  }
  add_nv("x-bulwark-reason", reason_name(reason));
  if (!ex.request_id.empty()) add_nv("x-request-id", ex.request_id);
  add_extra_lines(std::string_view(ex.reply_extra, ex.reply_extra_len));
  if (has_body_) {
    body_ = std::move(body);
    body_sent_ = 0;
    body_end_ = true;
  }
  ex.bytes_out += body_.size();
  ex.response_started = true;
  head_pending_ = true;
  (void)close_after;  // the stream ends with its response either way; the connection stays
  if (phase_ == Phase::request || phase_ == Phase::head) finish_request();
  session_.request_flush();
}

void H2Stream::finish_request() {
  if (finished_) return;
  account_request();
  if (ex_) {
    if (x().attempt.conn) x().detach_upstream(false);
    x().end_attempt();
    x().leave_admission();
  }
  finished_ = true;
  deadline_ms_ = 0;
  phase_ = Phase::lingering;
  paused_ = false;  // what the client still sends is discarded
  consume();
  end_exchange();
}

void H2Stream::close() {
  if (closed_ || finished_) {
    reset(NGHTTP2_INTERNAL_ERROR);
    return;
  }
  end_request_use();
  finished_ = true;
  reset(NGHTTP2_INTERNAL_ERROR);
}

// What a request that ends early gives back: its log line, upstream connection, attempt and
// admission. The exchange itself ends with the stream (~H2Stream), never here: this may run
// inside one of its own calls.
void H2Stream::end_request_use() {
  if (!ex_) return;
  account_request();
  if (ex_->attempt.conn) {
    ex_->attempt.conn->close();
    ex_->attempt.conn = nullptr;
  }
  ex_->end_attempt();
  ex_->leave_admission();
  if (buffers_) buffers_->stop_timers();
  deadline_ms_ = 0;
}

void H2Stream::reset(std::uint32_t error_code) {
  if (closed_) return;
  nghttp2_submit_rst_stream(session_.session(), NGHTTP2_FLAG_NONE, id_, error_code);
  session_.request_flush();
}

void H2Stream::on_closed() {
  if (closed_) return;
  closed_ = true;
  deadline_ms_ = 0;
  // A response whose last frame just went out: the exchange finishes it (finish_request).
  // Otherwise the client reset the stream, or the connection ended, before the response was
  // done: the request ends as an HTTP/1 request does when its client goes away.
  if (!finished_ && !body_end_) end_request_use();
  finished_ = finished_ || !body_end_;
}

}  // namespace bulwark
