// One request on an HTTP/2 upstream connection: the HTTP/1.1 bytes of the request read back
// into HEADERS and DATA frames, the response's frames reported to the client with HTTP/1.1's
// vocabulary, and flow control both ways.
#include <algorithm>
#include <charconv>
#include <cstring>

#include "http/grpc.h"
#include "upstream/h2_connection.h"
#include "upstream/h2_pool.h"

namespace bulwark {

namespace {

H2UpstreamStream* self(llhttp_t* p) { return static_cast<H2UpstreamStream*>(p->data); }

// Fields of an HTTP/1.1 request that HTTP/2 does not carry (RFC 9113 8.2.2), and Host, which
// becomes :authority.
bool dropped_request_field(std::string_view lower, std::string_view value) {
  if (lower == "te") return !iequals(trim(value), "trailers");
  return lower == "host" || lower == "connection" || lower == "keep-alive" ||
         lower == "proxy-connection" || lower == "transfer-encoding" || lower == "upgrade" ||
         lower == "http2-settings";
}

// Name/value pairs for nghttp2 (which copies them), names lower-cased.
class NvList {
 public:
  void clear() {
    store_.clear();
    spans_.clear();
  }
  void add(std::string_view name, std::string_view value, bool lower = false) {
    std::size_t n = store_.size();
    store_.append(name);
    if (lower) ascii_lower_in_place(store_.data() + n, name.size());
    store_.append(value);
    spans_.push_back({n, name.size(), value.size()});
  }
  std::string_view last_name() const {
    return {store_.data() + spans_.back().offset, spans_.back().name_len};
  }
  void drop_last() {
    store_.resize(spans_.back().offset);
    spans_.pop_back();
  }
  // Valid until the next add().
  const nghttp2_nv* nv() {
    nv_.clear();
    for (const Span& s : spans_) {
      auto* base = reinterpret_cast<std::uint8_t*>(store_.data() + s.offset);
      nv_.push_back({base, base + s.name_len, s.name_len, s.value_len, NGHTTP2_NV_FLAG_NONE});
    }
    return nv_.data();
  }
  std::size_t size() const { return spans_.size(); }

 private:
  struct Span {
    std::size_t offset, name_len, value_len;
  };
  std::string store_;
  std::vector<Span> spans_;
  std::vector<nghttp2_nv> nv_;
};

thread_local NvList t_nv;

bool is_grpc_status_field(std::string_view name) {
  return name == "grpc-status" || name == "grpc-message" || name == "grpc-status-details-bin";
}

}  // namespace

const llhttp_settings_t& H2UpstreamStream::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t x;
    llhttp_settings_init(&x);
    x.on_url = on_url;
    x.on_header_field = on_header_field;
    x.on_header_value = on_header_value;
    x.on_headers_complete = on_headers_complete;
    x.on_body = on_body;
    x.on_message_complete = on_message_complete;
    return x;
  }();
  return s;
}

namespace {
// Streams recycled on this thread, their buffers kept (no allocation per request in steady
// state). None under AddressSanitizer, which then sees every use after free.
#if defined(__SANITIZE_ADDRESS__)
constexpr std::size_t kMaxRecycled = 0;
#else
constexpr std::size_t kMaxRecycled = 1024;
#endif
struct Recycled {
  std::vector<H2UpstreamStream*> streams;
  ~Recycled() {
    for (H2UpstreamStream* s : streams) delete s;
  }
};
thread_local Recycled t_recycled;
}  // namespace

H2UpstreamStream* H2UpstreamStream::make(H2UpstreamConnection& conn) {
  H2UpstreamStream* s;
  if (t_recycled.streams.empty()) {
    s = new H2UpstreamStream();
  } else {
    s = t_recycled.streams.back();
    t_recycled.streams.pop_back();
  }
  s->reset(conn);
  return s;
}

void H2UpstreamStream::recycle(H2UpstreamStream* s) {
  if (t_recycled.streams.size() >= kMaxRecycled) {
    delete s;
    return;
  }
  t_recycled.streams.push_back(s);
}

void H2UpstreamStream::reset(H2UpstreamConnection& conn) {
  conn_ = &conn;
  client_ = nullptr;
  out_.clear();
  llhttp_init(&parser_, HTTP_REQUEST, &settings());
  parser_.data = this;
  url_.clear();
  request_headers_.clear();
  request_trailers_.clear();
  body_.clear();
  body_offset_ = 0;
  id_ = -1;
  status_ = 0;
  headers_.clear();
  trailers_.clear();
  content_length_ = header_bytes_ = unconsumed_ = paused_since_us_ = paused_us_ = 0;
  head_request_ = request_head_done_ = request_done_ = body_deferred_ = body_high_ = false;
  has_content_length_ = chunked_ = final_head_ = response_done_ = paused_ = reused_ = false;
  released_ = closed_ = retired_ = touched_ = false;
}

void H2UpstreamStream::attach(UpstreamClient* client, bool head_request) {
  client_ = client;
  head_request_ = head_request;
}

bool H2UpstreamStream::connected() const { return conn_->ready(); }

void H2UpstreamStream::on_ready() {
  if (client_) client_->on_upstream_connected();
}

// --- the request --------------------------------------------------------------------------

bool H2UpstreamStream::flush() {
  if (released_ || conn_->state_ == H2UpstreamConnection::State::closing) {
    out_.clear();
    return false;
  }
  if (!out_.empty() && !translate()) return false;
  if (queued_bytes() > kHighWater) body_high_ = true;
  conn_->request_send();
  return true;
}

bool H2UpstreamStream::translate() {
  bool ok = out_.each([this](const char* data, std::size_t len) {
    if (request_done_) return len == 0;  // nothing may follow the request
    llhttp_errno_t e = llhttp_execute(&parser_, data, len);
    return e == HPE_OK || (e == HPE_PAUSED_UPGRADE && request_done_);
  });
  out_.clear();
  if (ok) return true;
  if (!released_) fail(UpstreamError::protocol, "the request could not be relayed over HTTP/2");
  return false;
}

int H2UpstreamStream::on_url(llhttp_t* p, const char* at, std::size_t len) {
  self(p)->url_.append(at, len);
  return 0;
}

int H2UpstreamStream::on_header_field(llhttp_t* p, const char* at, std::size_t len) {
  H2UpstreamStream* s = self(p);
  (s->request_head_done_ ? s->request_trailers_ : s->request_headers_).append_name(at, len);
  return 0;
}

int H2UpstreamStream::on_header_value(llhttp_t* p, const char* at, std::size_t len) {
  H2UpstreamStream* s = self(p);
  (s->request_head_done_ ? s->request_trailers_ : s->request_headers_).append_value(at, len);
  return 0;
}

int H2UpstreamStream::on_headers_complete(llhttp_t* p) {
  H2UpstreamStream* s = self(p);
  s->request_head_done_ = true;
  if (!s->submit()) return -1;
  // An upgrade request goes as a plain one (HTTP/2 has no Upgrade): no body follows it.
  if (p->upgrade) s->request_done_ = true;
  return 0;
}

int H2UpstreamStream::on_body(llhttp_t* p, const char* at, std::size_t len) {
  H2UpstreamStream* s = self(p);
  s->body_.append(at, len);
  if (s->body_deferred_ && s->id_ > 0) {
    s->body_deferred_ = false;
    nghttp2_session_resume_data(s->conn_->session_, s->id_);
  }
  return 0;
}

int H2UpstreamStream::on_message_complete(llhttp_t* p) {
  H2UpstreamStream* s = self(p);
  s->request_done_ = true;
  if (s->body_deferred_ && s->id_ > 0) {
    s->body_deferred_ = false;
    nghttp2_session_resume_data(s->conn_->session_, s->id_);
  }
  return 0;
}

bool H2UpstreamStream::submit() {
  if (parser_.method == HTTP_CONNECT) {
    fail(UpstreamError::protocol, "CONNECT is not relayed to an HTTP/2 upstream");
    return false;
  }
  NvList& nv = t_nv;
  nv.clear();
  nv.add(":method", llhttp_method_name(static_cast<llhttp_method_t>(parser_.method)));
  nv.add(":scheme", conn_->pool_.config().tls ? "https" : "http");
  nv.add(":authority", request_headers_.get("host"));
  nv.add(":path", url_);
  bool has_te = false;
  for (std::size_t i = 0; i < request_headers_.size(); ++i) {
    nv.add(request_headers_.name(i), request_headers_.value(i), true);
    if (dropped_request_field(nv.last_name(), request_headers_.value(i))) {
      nv.drop_last();
      continue;
    }
    if (nv.last_name() == "te") has_te = true;
  }
  // gRPC servers expect `te: trailers` (a hop-by-hop field the client's hop ended).
  if (!has_te && is_grpc_content_type(request_headers_.get("content-type")))
    nv.add("te", "trailers");
  bool body = (parser_.flags & F_CHUNKED) != 0 ||
              ((parser_.flags & F_CONTENT_LENGTH) && parser_.content_length > 0);
  nghttp2_data_provider provider;
  provider.source.ptr = this;
  provider.read_callback = read_body;
  std::int32_t id = nghttp2_submit_request(conn_->session_, nullptr, nv.nv(), nv.size(),
                                           body ? &provider : nullptr, this);
  if (id < 0) {
    fail(UpstreamError::reset, nghttp2_strerror(id));
    return false;
  }
  id_ = id;
  conn_->pool_.stats().h2_streams.add(1);
  if (!body) request_done_ = true;
  return true;
}

ssize_t H2UpstreamStream::read_body(nghttp2_session* session, std::int32_t, std::uint8_t* buf,
                                    std::size_t length, std::uint32_t* flags,
                                    nghttp2_data_source* source, void*) {
  auto* s = static_cast<H2UpstreamStream*>(source->ptr);
  std::size_t n = std::min(length, s->body_.size() - s->body_offset_);
  if (n == 0 && !s->request_done_) {
    s->body_deferred_ = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  std::memcpy(buf, s->body_.data() + s->body_offset_, n);
  s->body_offset_ += n;
  if (s->body_offset_ == s->body_.size()) {
    s->body_.clear();  // the capacity stays for what comes next
    s->body_offset_ = 0;
  }
  if (s->request_done_ && s->body_.empty()) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (s->request_trailers_.size() > 0) {
      NvList& nv = t_nv;
      nv.clear();
      for (std::size_t i = 0; i < s->request_trailers_.size(); ++i)
        nv.add(s->request_trailers_.name(i), s->request_trailers_.value(i), true);
      if (nghttp2_submit_trailer(session, s->id_, nv.nv(), nv.size()) == 0)
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
  }
  return static_cast<ssize_t>(n);
}

std::size_t H2UpstreamStream::queued_bytes() const {
  return body_.size() - body_offset_ +
         uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&conn_->tcp_));
}

// --- the response -------------------------------------------------------------------------

void H2UpstreamStream::on_begin_headers() {
  if (!final_head_) {
    headers_.clear();
    status_ = 0;
  }
}

bool H2UpstreamStream::add_header(std::string_view name, std::string_view value) {
  header_bytes_ += name.size() + value.size() + 32;  // as SETTINGS_MAX_HEADER_LIST_SIZE counts
  if (header_bytes_ > conn_->pool_.config().max_response_header_bytes) {
    fail(UpstreamError::protocol,
         final_head_ ? "the trailer section exceeds the upstream's max_response_header_bytes"
                     : "the response head exceeds the upstream's max_response_header_bytes");
    return false;
  }
  if (name == ":status") {
    int status = 0;
    auto r = std::from_chars(value.data(), value.data() + value.size(), status);
    if (r.ec != std::errc() || value.size() != 3) status = 0;
    status_ = status;
    return true;
  }
  if (!name.empty() && name[0] == ':') return true;  // nghttp2 checked it
  HeaderBlock& block = final_head_ ? trailers_ : headers_;
  block.append_name(name.data(), name.size());
  block.append_value(value.data(), value.size());
  block.end_value();
  return true;
}

void H2UpstreamStream::on_headers_frame(bool end_stream) {
  touch();
  if (final_head_) {  // trailers (nghttp2 checked that they end the stream)
    on_end_stream();
    return;
  }
  if (!client_) return;
  if (status_ < 200) {
    if (status_ == 101 || status_ < 100) {
      fail(UpstreamError::protocol, "an invalid :status in an HTTP/2 response");
      return;
    }
    header_bytes_ = 0;
    client_->on_upstream_interim(*this);
    return;
  }
  final_head_ = true;
  std::string_view length = headers_.get("content-length");
  if (headers_.count("content-length") > 0) {
    auto r = std::from_chars(length.data(), length.data() + length.size(), content_length_);
    has_content_length_ = r.ec == std::errc() && r.ptr == length.data() + length.size();
  }
  bool body = !head_request_ && status_ != 204 && status_ != 304 && !end_stream;
  chunked_ = body && !has_content_length_;
  if (end_stream && headers_.count("grpc-status") > 0) {
    // A gRPC trailers-only response: its status fields go on as trailers, so an HTTP/2
    // client gets them in a trailing HEADERS frame and an HTTP/1.1 client in the trailer
    // section of a chunked body.
    HeaderBlock head;
    for (std::size_t i = 0; i < headers_.size(); ++i) {
      HeaderBlock& to = is_grpc_status_field(headers_.name(i)) ? trailers_ : head;
      to.append_name(headers_.name(i).data(), headers_.name(i).size());
      to.append_value(headers_.value(i).data(), headers_.value(i).size());
      to.end_value();
    }
    headers_ = std::move(head);
    chunked_ = !head_request_;
  }
  header_bytes_ = 0;
  client_->on_upstream_headers(*this);
  if (end_stream) on_end_stream();
}

void H2UpstreamStream::on_data(const char* data, std::size_t len) {
  touch();
  if (client_ && !response_done_ && final_head_) {
    if (chunked_) {
      client_->on_upstream_chunk_header(len);
      if (client_) client_->on_upstream_body(data, len);
      if (client_) client_->on_upstream_chunk_complete();
    } else {
      client_->on_upstream_body(data, len);
    }
  }
  // The stream's window opens again once its client reads on.
  if (paused_ && client_)
    unconsumed_ += len;
  else if (id_ > 0)
    nghttp2_session_consume_stream(conn_->session_, id_, len);
}

void H2UpstreamStream::on_end_stream() {
  touch();
  if (response_done_) return;
  response_done_ = true;
  if (client_ && final_head_) client_->on_upstream_complete();  // may release the stream
}

void H2UpstreamStream::on_closed(std::uint32_t error_code) {
  closed_ = true;
  if (client_ && !response_done_) {
    UpstreamError e =
        error_code == NGHTTP2_REFUSED_STREAM ? UpstreamError::refused : UpstreamError::reset;
    fail(e);
  }
  maybe_retire();
}

void H2UpstreamStream::fail(UpstreamError error, std::string_view detail, bool tell) {
  UpstreamClient* c = client_;
  client_ = nullptr;
  released_ = true;
  if (!closed_) {
    if (id_ > 0)
      nghttp2_submit_rst_stream(conn_->session_, NGHTTP2_FLAG_NONE, id_,
                                error == UpstreamError::protocol ? NGHTTP2_PROTOCOL_ERROR
                                                                 : NGHTTP2_CANCEL);
    else
      closed_ = true;  // never submitted
    conn_->request_send();
  }
  if (c && tell) c->on_upstream_error(error, error == UpstreamError::protocol ? detail : "");
  maybe_retire();
}

void H2UpstreamStream::touch() {
  if (touched_) return;
  touched_ = true;
  conn_->touched_streams_.push_back(this);
}

void H2UpstreamStream::batch_end() {
  touched_ = false;
  if (client_) client_->on_upstream_batch_end();
}

void H2UpstreamStream::release(bool reusable) {
  if (released_) return;
  client_ = nullptr;
  released_ = true;
  if (!closed_) {
    if (id_ < 0) {
      closed_ = true;  // never submitted
    } else if (!reusable || !response_done_ || !request_done_) {
      nghttp2_submit_rst_stream(conn_->session_, NGHTTP2_FLAG_NONE, id_, NGHTTP2_CANCEL);
      conn_->request_send();
    } else if (unconsumed_) {
      nghttp2_session_consume_stream(conn_->session_, id_, unconsumed_);
      unconsumed_ = 0;
    }
  }
  maybe_retire();
}

void H2UpstreamStream::maybe_retire() {
  if (!released_ || !closed_ || retired_) return;
  retired_ = true;
  conn_->stream_done(this);
}

void H2UpstreamStream::pause_reading() {
  if (paused_) return;
  paused_ = true;
  paused_since_us_ = uv_hrtime() / 1000;
}

void H2UpstreamStream::resume_reading() {
  if (!paused_) return;
  paused_ = false;
  paused_us_ += uv_hrtime() / 1000 - paused_since_us_;
  if (unconsumed_ && id_ > 0 && !closed_) {
    nghttp2_session_consume_stream(conn_->session_, id_, unconsumed_);
    conn_->request_send();
  }
  unconsumed_ = 0;
}

std::uint64_t H2UpstreamStream::read_paused_us() const {
  return paused_us_ + (paused_ ? uv_hrtime() / 1000 - paused_since_us_ : 0);
}

}  // namespace bulwark
