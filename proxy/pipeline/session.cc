// The proxying side of a Downstream: route the request, pick an endpoint and a pooled
// connection, stream the request body up and the response down, and turn upstream
// failures into local replies.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "admin/stats.h"
#include "core/log.h"
#include "pipeline/downstream.h"
#include "worker.h"

namespace bulwark {

namespace {

bool printable_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (unsigned char c : id)
    if (c <= 0x20 || c >= 0x7f) return false;
  return true;
}

}  // namespace

int Downstream::reply_from_headers(Reason reason, std::string_view detail, int status) {
  bool has_body = (parser_.flags & F_CHUNKED) || parser_.content_length > 0;
  if (!has_body && !parser_.upgrade) {
    // Answer once the (empty) request is complete, keeping the connection.
    pending_reply_ = true;
    pending_reason_ = reason;
    b().pending_detail.assign(detail);
    pending_status_ = status;
    return 0;
  }
  local_reply(reason, detail, true, status);
  return HPE_PAUSED;
}

int Downstream::start_request() {
  phase_ = Phase::request;
  method_ = parser_.method;
  request_upgrade_ = parser_.upgrade != 0;
  // HTTP/1.x with x > 1 is served as HTTP/1.1 (RFC 9110 6.2: same major version).
  minor_version_ = parser_.http_minor > 0 ? 1 : 0;
  head_request_ = parser_.method == HTTP_HEAD;
  b().info = inspect_request(b().headers);
  const ListenerConfig& lc = *listener_.config;

  if (b().info.request_id.empty() || !printable_id(b().info.request_id)) {
    worker_.ids().next(b().request_id);
    request_id_ = std::string_view(b().request_id, sizeof b().request_id);
  } else {
    // Owned: the id outlives anything that may happen to the head buffer (log, retries).
    b().request_id_copy.assign(b().info.request_id);
    request_id_ = b().request_id_copy;
  }
  if (b().info.connection_close || (minor_version_ == 0 && !b().info.connection_keep_alive) ||
      draining_)
    close_after_response_ = true;

  if (parser_.http_major != 1) {
    local_reply(Reason::bad_request, "unsupported HTTP version", true);
    return HPE_PAUSED;
  }
  if (parser_.method == HTTP_CONNECT) {
    local_reply(Reason::bad_request, "CONNECT is not supported", true);
    return HPE_PAUSED;
  }
  if (b().info.host_count > 1) {
    local_reply(Reason::bad_request, "more than one Host header", true);
    return HPE_PAUSED;
  }
  if (minor_version_ == 1 && b().info.host_count == 0) {
    local_reply(Reason::bad_request, "missing Host header", true);
    return HPE_PAUSED;
  }
  if (b().info.host_count == 1 && !valid_host_value(b().info.host)) {  // RFC 9112 3.2
    local_reply(Reason::bad_request, "invalid Host header", true);
    return HPE_PAUSED;
  }
  std::string_view target = origin_form(b().url);
  if (target.empty()) {
    local_reply(Reason::bad_request, "invalid request target", true);
    return HPE_PAUSED;
  }
  // An absolute-form target must name a host (RFC 9110 4.2.1): "http:///x" or "http://u@/x"
  // is invalid, not a target without an authority (Host would be kept, disagreeing with it);
  // the authority becomes Host, so it must be a valid Host value.
  if (b().url.front() != '/' && b().url != "*" &&
      (host_without_port(target_authority(b().url)).empty() ||
       !valid_host_value(target_authority(b().url)))) {
    local_reply(Reason::bad_request, "absolute-form target without a valid host", true);
    return HPE_PAUSED;
  }
  // Framing (RFC 9112 6). llhttp already refuses a non-empty Transfer-Encoding with a
  // Content-Length, and duplicate lengths; an empty Transfer-Encoding line counts too.
  if (b().info.transfer_encoding_count > 0) {
    if (b().info.content_length_count > 0) {
      local_reply(Reason::bad_request, "both Content-Length and Transfer-Encoding", true);
      return HPE_PAUSED;
    }
    if (minor_version_ == 0) {  // RFC 9112 6.1: faulty framing in HTTP/1.0
      local_reply(Reason::bad_request, "Transfer-Encoding in an HTTP/1.0 request", true);
      return HPE_PAUSED;
    }
    std::string_view coding;
    switch (transfer_coding(b().headers, &coding)) {
      case TransferCoding::invalid:
        b().pending_detail.assign("invalid Transfer-Encoding: ").append(coding.substr(0, 64));
        local_reply(Reason::bad_request, b().pending_detail, true);
        return HPE_PAUSED;
      case TransferCoding::unsupported:
        // RFC 9112 6.1: 501 for a transfer coding the server does not understand. SPEC has no
        // reason for 501: bad-request, with the status overridden.
        b().pending_detail.assign("unsupported transfer coding: ").append(coding.substr(0, 64));
        local_reply(Reason::bad_request, b().pending_detail, true, 501);
        return HPE_PAUSED;
      case TransferCoding::absent:
      case TransferCoding::chunked:
        break;
    }
  }
  if (parser_.flags & F_CHUNKED) {
    request_framing_ = BodyFraming::chunked;
  } else if (parser_.flags & F_CONTENT_LENGTH) {
    // Kept even when 0: a POST without it may be answered 411 (RFC 9110 8.6).
    request_framing_ = BodyFraming::content_length;
    request_content_length_ = parser_.content_length;  // llhttp counts it down as it reads
    if (parser_.content_length > lc.max_body_bytes) {
      local_reply(Reason::body_too_large, "request body exceeds the listener's max_body_bytes",
                  true);
      return HPE_PAUSED;
    }
  }
  if (b().info.expect_other)
    return reply_from_headers(Reason::bad_request, "unsupported Expect", 417);
  upgrade_ = parser_.upgrade && !b().info.upgrade.empty();

  std::string_view host = target_authority(b().url);
  if (host.empty()) host = b().info.host;
  const char* method = llhttp_method_name(static_cast<llhttp_method_t>(method_));
  route_ = listener_.router->match(method, target_path(target), host, b().headers);
  if (route_ < 0) {
    route_stats_ = nullptr;
    return reply_from_headers(Reason::no_route, "no route matches the request");
  }
  route_stats_ = &listener_.stats->routes[static_cast<std::size_t>(route_)];
  upstream_ = listener_.route_upstreams[static_cast<std::size_t>(route_)];
  route_state_ = listener_.route_states[static_cast<std::size_t>(route_)];
  std::uint64_t timeout = lc.routes[static_cast<std::size_t>(route_)].timeout_ms;
  std::uint64_t now = uv_now(worker_.loop());
  route_deadline_ms_ = timeout ? now + timeout : 0;
  body_activity_ms_ = now;
  arm_request_timer();
  if (route_state_->retry) {
    route_state_->budget->record_request(now);
    replay_enabled_ = route_state_->retry->method_allowed(method) && !upgrade_;
  }
  if (route_state_->limiter) {
    int limited = check_rate_limit();
    if (limited >= 0 || ratelimit_pending_) return limited >= 0 ? limited : 0;
  }
  switch (upstream_->admit(*this)) {
    case Upstream::Admission::admitted:
      admitted_ = true;
      break;
    case Upstream::Admission::queued:
      queued_ = true;  // the body, if any, is kept in b().queued_bytes until admission
      return 0;
    case Upstream::Admission::rejected:
      return reply_from_headers(Reason::pending_overflow,
                                "the upstream has max_requests in flight and max_pending waiting");
  }
  if (!start_attempt()) return HPE_PAUSED;
  return 0;
}

void Downstream::on_admitted() {
  queued_ = false;
  admitted_ = true;
  if (done()) return;
  if (!start_attempt() || !up_) return;  // no endpoint, or waiting for a pooled connection
  flush();
  b().queued_bytes.clear();
  if (!done() && !request_complete_ && pending_input_.size() < kHighWater) resume_reading();
}

void Downstream::on_pending_timeout() {
  queued_ = false;
  local_reply(Reason::pending_overflow, "no upstream capacity freed up within pending_timeout");
}

void Downstream::leave_bulkhead() {
  if (ratelimit_pending_) {
    if (RedisRateLimiter* redis = worker_.redis()) redis->cancel(ratelimit_pending_);
    ratelimit_pending_ = nullptr;
  }
  if (queued_) {
    queued_ = false;
    upstream_->cancel(*this);
  }
  b().queued_bytes.clear();
  if (admitted_) {
    admitted_ = false;
    upstream_->release();  // may admit another waiting request right away
  }
}

void Downstream::report_breaker(CallResult result) {
  if (!endpoint_ || breaker_reported_) return;
  breaker_reported_ = true;
  CircuitBreaker* breaker = endpoint_->state->breaker.get();
  if (!breaker) return;
  std::uint64_t now = uv_now(worker_.loop());
  breaker->record(worker_.index(), result, now - attempt_start_ms_, probe_, now);
}

CallResult Downstream::breaker_result(bool counted) const {
  return counted ? CallResult::failure : CallResult::cancelled;
}

void Downstream::end_attempt(CallResult result) {
  if (endpoint_ && waiting()) endpoint_->pool->cancel_wait(this);
  if (endpoint_) {
    report_breaker(result);
    upstream_->end_request(*endpoint_);
    endpoint_ = nullptr;
  }
}

void Downstream::upstream_add(const char* data, std::size_t len, bool borrowed) {
  if (replay_enabled_ && !replay_overflow_) {
    std::string& replay = b().replay;
    if (replay.size() + len > route_state_->retry->config().max_body_bytes) {
      replay_overflow_ = true;  // too big to keep: this request will not be retried
      replay.clear();
    } else {
      replay.append(data, len);
    }
  }
  if (up_) {
    if (borrowed)
      up_->out().add(data, len);
    else
      up_->out().add_copy(std::string_view(data, len));
  } else if (queued_ || waiting() || ratelimit_pending_) {
    b().queued_bytes.append(data, len);
    if (b().queued_bytes.size() > kHighWater) pause_reading();
  }
}

void Downstream::upstream_add_chunk_header(std::uint64_t size) {
  body_activity_ms_ = uv_now(worker_.loop());
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "%llx\r\n", static_cast<unsigned long long>(size));
  upstream_add(buf, static_cast<std::size_t>(n), false);
}

bool Downstream::start_attempt() {
  std::uint64_t now = uv_now(worker_.loop());
  Upstream::Pick pick = upstream_->pick(now, failed_endpoint_);
  UpstreamEndpoint* endpoint = pick.endpoint;
  if (!endpoint) {
    Reason reason = pick.circuit_open ? Reason::circuit_open : Reason::no_healthy_upstream;
    const char* detail = pick.circuit_open ? "every endpoint's circuit breaker is open"
                                           : "the upstream has no endpoints";
    if (pick.circuit_open) {
      // Retry-After: whole seconds until the earliest endpoint may be probed, at least 1.
      std::uint64_t seconds = std::max<std::uint64_t>(1, (pick.retry_after_ms + 999) / 1000);
      int n = std::snprintf(reply_extra_, sizeof reply_extra_, "Retry-After: %llu\r\n",
                            static_cast<unsigned long long>(seconds));
      reply_extra_len_ = static_cast<std::size_t>(n);
    }
    if (request_complete_ || !in_execute_) {
      local_reply(reason, detail);
      return false;
    }
    return reply_from_headers(reason, detail) == 0;
  }
  probe_ = pick.probe;
  breaker_reported_ = false;
  attempt_start_ms_ = now;
  endpoint_ = endpoint;
  b().endpoint_name = endpoint->name();
  upstream_->begin_request(*endpoint);
  // A full pool: wait for a connection (on_pool_connection); request bytes are kept meanwhile.
  if (UpstreamConnection* conn = endpoint->pool->acquire(this)) use_connection(conn);
  return true;
}

void Downstream::use_connection(UpstreamConnection* conn) {
  up_ = conn;
  ++attempts_;
  conn->attach(this, head_request_);
  last_attempt_reused_ = conn->reused();
  UpstreamRequestHead head;
  head.method = llhttp_method_name(static_cast<llhttp_method_t>(method_));
  head.target = origin_form(b().url);
  // Exactly one Host (RFC 9112 3.2): an absolute-form target's authority replaces the
  // client's Host (3.2.2); a client without one (HTTP/1.0) gets the endpoint's address.
  head.host = target_authority(b().url);
  if (head.host.empty()) head.host = b().info.host_count ? b().info.host : b().endpoint_name;
  head.client_ip = client_ip_;
  head.request_id = request_id_;
  head.framing = request_framing_;
  head.content_length = request_content_length_;
  if (upgrade_) head.upgrade = b().info.upgrade;
  write_upstream_request_head(b().upstream_head, b().headers, head);
  up_->out().add(b().upstream_head);
  if (attempts_ > 1)
    up_->out().add(b().replay);  // a retry: the body so far, from the replay copy
  else if (!b().queued_bytes.empty())
    up_->out().add(b().queued_bytes);  // cleared after the next flush
  if (conn->connected()) send_continue();
  if (route_state_ && route_state_->retry && route_state_->retry->config().per_try_timeout_ms) {
    arm_attempt_timer(
        attempt_timeout_ms(route_state_->retry->config().per_try_timeout_ms, time_left_ms()));
  }
}

void Downstream::on_pool_connection(UpstreamConnection* conn) {
  if (done() || !endpoint_) {  // cannot happen while waiting is cancelled on every exit
    conn->release(true);
    return;
  }
  use_connection(conn);
  flush();
  b().queued_bytes.clear();
  if (!done() && !request_complete_ && pending_input_.size() < kHighWater) resume_reading();
}

void Downstream::send_continue() {
  if (sent_continue_ || !b().info.expect_continue || minor_version_ == 0 || request_complete_ ||
      response_started_ || !request_has_body())
    return;
  sent_continue_ = true;
  body_activity_ms_ = uv_now(worker_.loop());  // the client may send its body from now on
  b().out.add_copy("HTTP/1.1 100 Continue\r\n\r\n");
}

void Downstream::forward_body(const char* data, std::size_t len) {
  body_activity_ms_ = uv_now(worker_.loop());
  if (pending_reply_) return;  // answered locally: discarded
  upstream_add(data, len, true);
  body_sent_upstream_ = up_ != nullptr || queued_ || waiting() || ratelimit_pending_;
}

void Downstream::end_request_body() {
  if (request_framing_ != BodyFraming::chunked) return;
  upstream_add("0\r\n", 3, false);
  if (!b().trailers.empty()) upstream_add(b().trailers.data(), b().trailers.size(), false);
  upstream_add("\r\n", 2, false);
}

void Downstream::detach_upstream(bool reusable, CallResult result) {
  if (up_) {
    up_->release(reusable);
    up_ = nullptr;
  }
  end_attempt(result);
}

void Downstream::record_upstream_outcome(int outcome) {
  if (endpoint_) upstream_->stats(*endpoint_).outcomes[outcome].add();
}

void Downstream::on_upstream_connected() {
  send_continue();
  flush();
}

void Downstream::on_upstream_interim(UpstreamConnection& conn) {
  // RFC 9110 15.2: a proxy forwards 1xx responses, except those it asked for itself, and
  // never to an HTTP/1.0 client. Bulwark answers Expect: 100-continue itself (the header is
  // not forwarded), so a 100 from the upstream after Bulwark's own is not sent twice.
  if (minor_version_ == 0 || done()) return;
  if (conn.status() == 100) {
    if (sent_continue_) return;
    sent_continue_ = true;
  }
  std::string& head = b().scratch;
  write_interim_response_head(head, conn.headers(), conn.status(), conn.status_text());
  b().out.add_copy(head);
  bytes_out_ += head.size();
}

void Downstream::on_upstream_headers(UpstreamConnection& conn) {
  status_ = conn.status();
  if (status_ >= 200 && retry_response(conn)) {
    discard_response_ = true;  // read and drop the body, then retry
    return;
  }
  // The response starts: no retry from here on, and the replay copy is not needed.
  if (buffers_) uv_timer_stop(&buffers_->attempt_timer);
  replay_enabled_ = false;
  b().replay.clear();
  bool no_body = head_request_ || status_ == 204 || status_ == 304 || status_ == 101;
  std::string_view upgrade;
  if (status_ == 101) {
    if (!upgrade_) return;  // unsolicited 101: handled as an error at completion
    upgrade = conn.headers().get("upgrade");
    response_framing_ = BodyFraming::none;
  } else if (no_body) {
    response_framing_ = conn.has_content_length() && status_ != 204 ? BodyFraming::content_length
                                                                    : BodyFraming::none;
  } else if (conn.has_content_length()) {
    response_framing_ = BodyFraming::content_length;
  } else if (minor_version_ == 1) {
    response_framing_ = BodyFraming::chunked;  // chunked or close-delimited upstream body
  } else {
    response_framing_ = BodyFraming::none;  // HTTP/1.0 client: the close ends the body
    close_after_response_ = true;
  }
  upstream_chunked_ = conn.body_chunked();
  if ((upgrade_ && status_ != 101) || draining_) close_after_response_ = true;

  DownstreamResponseHead head;
  head.status = status_;
  head.reason = conn.status_text();
  head.minor_version = minor_version_;
  head.framing = response_framing_;
  head.content_length = conn.content_length();
  head.close = close_after_response_;
  head.keep_alive_1_0 = minor_version_ == 0 && !close_after_response_;
  head.upgrade = upgrade;
  char extra[160];
  std::size_t extra_len = 0;
  if (attempts_ > 1) {
    int n = std::snprintf(extra, sizeof extra, "x-bulwark-attempts: %d\r\n", attempts_);
    extra_len = static_cast<std::size_t>(n);
  }
  if (ratelimit_header_len_ && extra_len + ratelimit_header_len_ < sizeof extra) {
    std::memcpy(extra + extra_len, ratelimit_header_, ratelimit_header_len_);
    extra_len += ratelimit_header_len_;
  }
  head.extra = std::string_view(extra, extra_len);
  write_downstream_response_head(b().response_head, conn.headers(), head);
  b().out.add(b().response_head);
  bytes_out_ += b().response_head.size();
  response_started_ = true;
}

void Downstream::on_upstream_chunk_header(std::uint64_t size) {
  if (discard_response_) return;
  response_chunk_size_ = size;
  if (response_framing_ == BodyFraming::chunked && upstream_chunked_ && size > 0)
    b().out.add_chunk_header(size);
}

void Downstream::on_upstream_body(const char* data, std::size_t len) {
  if (discard_response_) return;
  bytes_out_ += len;
  if (response_framing_ == BodyFraming::chunked && !upstream_chunked_) {
    b().out.add_chunk_header(len);
    b().out.add(data, len);
    b().out.add_copy("\r\n");
    return;
  }
  b().out.add(data, len);
}

void Downstream::on_upstream_chunk_complete() {
  if (discard_response_) return;
  if (response_framing_ == BodyFraming::chunked && upstream_chunked_ && response_chunk_size_ > 0)
    b().out.add_copy("\r\n");
}

void Downstream::on_upstream_complete() {
  if (status_ == 101) {
    if (!upgrade_) {
      record_upstream_outcome(static_cast<int>(UpstreamOutcome::protocol_error));
      upstream_failed(Reason::upstream_protocol_error, UpstreamError::protocol,
                      "the upstream switched protocols (101) for a request without Upgrade");
      return;
    }
    record_upstream_outcome(static_cast<int>(UpstreamOutcome::success));
    report_breaker(CallResult::success);
    phase_ = Phase::tunnel;
    up_->start_tunnel();
    if (client_eof_) {  // a pipelined upgrade after the client's half-close: nothing to tunnel
      close_gracefully();
      return;
    }
    arm_timer(listener_.config->idle_timeout_ms);
    flush();
    resume_reading();
    return;
  }
  const auto& cb = upstream_->config().circuit_breaker;
  if (discard_response_) {
    // A retriable response, read to its end so the connection can be reused: retry now.
    discard_response_ = false;
    record_upstream_outcome(
        static_cast<int>(status_ >= 500 ? UpstreamOutcome::failure : UpstreamOutcome::success));
    failed_endpoint_ = endpoint_;
    detach_upstream(request_complete_,
                    cb && cb->counts_status(status_) ? CallResult::failure : CallResult::success);
    status_ = 0;
    schedule_retry();
    return;
  }
  if (response_framing_ == BodyFraming::chunked) {
    if (upstream_chunked_ && up_ && up_->trailers().size() > 0) {
      // Trailer fields go on as trailers of the chunked response (HTTP/1.1 clients only: an
      // HTTP/1.0 client's response is not chunked and has nowhere to carry them).
      write_last_chunk(b().scratch, up_->trailers());
      b().out.add_copy(b().scratch);
      bytes_out_ += b().scratch.size();
    } else {
      b().out.add_copy("0\r\n\r\n");
    }
  }
  record_upstream_outcome(
      static_cast<int>(status_ >= 500 ? UpstreamOutcome::failure : UpstreamOutcome::success));
  if (!request_complete_) close_after_response_ = true;
  flush();
  detach_upstream(request_complete_,
                  cb && cb->counts_status(status_) ? CallResult::failure : CallResult::success);
  if (closing_) return;
  finish_request();
}

void Downstream::on_upstream_tunnel_data(const char* data, std::size_t len) {
  bytes_out_ += len;
  b().out.add(data, len);
  arm_timer(listener_.config->idle_timeout_ms);
}

void Downstream::on_upstream_batch_end() { flush(); }

void Downstream::on_upstream_drained() {
  if (read_paused_ && pending_input_.size() < kHighWater && !request_complete_) resume_reading();
  if (phase_ == Phase::tunnel) resume_reading();
}

void Downstream::on_upstream_error(UpstreamError error, std::string_view detail) {
  up_ = nullptr;  // the connection is closing already
  if (error == UpstreamError::local_resources) {
    // Bulwark's own shortage: the endpoint and its breaker hear nothing of it.
    static LogThrottle throttle;
    throttle.log(LogLevel::warn, "upstream " + upstream_->config().name +
                                     ": out of file descriptors; answering 503 overloaded");
    end_attempt(CallResult::cancelled);
    if (done()) return;
    if (response_started_) {
      close();
      return;
    }
    int n = std::snprintf(reply_extra_, sizeof reply_extra_, "Retry-After: 1\r\n");
    reply_extra_len_ = static_cast<std::size_t>(n);
    local_reply(Reason::overloaded, "Bulwark is out of file descriptors");
    return;
  }
  if (phase_ == Phase::tunnel) {  // the upstream ended the tunnel: not an upstream failure
    upstream_failed(Reason::upstream_reset, error);
    return;
  }
  switch (error) {
    case UpstreamError::connect_failure:
    case UpstreamError::connect_timeout:
      record_upstream_outcome(static_cast<int>(UpstreamOutcome::connect_failure));
      upstream_failed(Reason::upstream_connect_failure, error);
      break;
    case UpstreamError::reset:
      // A stale pooled connection is replayed and counted as such (upstream_failed), not as
      // a reset of the endpoint.
      if (!replays_stale_connection(error))
        record_upstream_outcome(static_cast<int>(UpstreamOutcome::reset));
      upstream_failed(Reason::upstream_reset, error);
      break;
    case UpstreamError::protocol:
      record_upstream_outcome(static_cast<int>(UpstreamOutcome::protocol_error));
      upstream_failed(Reason::upstream_protocol_error, error, detail);
      break;
    case UpstreamError::local_resources:
      break;  // answered above
  }
}

bool Downstream::replays_stale_connection(UpstreamError error) const {
  return error == UpstreamError::reset && last_attempt_reused_ && !body_sent_upstream_ &&
         !request_has_body() && stale_retries_ < 3 && !response_started_ &&
         phase_ != Phase::tunnel && endpoint_ && !done();
}

bool Downstream::retract_response() {
  if (!response_started_) return true;
  if (response_committed_ || local_reply_sent_) return false;
  // Only the response head (and body pieces of the same read) are in the batch: drop them.
  // An interim response or 100 Continue queued with them is dropped too; the local reply is
  // a valid final answer without it.
  bytes_out_ -= std::min(bytes_out_, static_cast<std::uint64_t>(b().out.bytes()));
  b().out.clear();
  response_started_ = false;
  response_framing_ = BodyFraming::none;
  upstream_chunked_ = false;
  status_ = 0;
  return true;
}

void Downstream::upstream_failed(Reason reason, UpstreamError error, std::string_view detail) {
  if (endpoint_) failed_endpoint_ = endpoint_;
  if (up_) {
    up_->close();
    up_ = nullptr;
  }
  // A kept-alive connection that the upstream closed just as we reused it: nothing was
  // processed, so the request goes again on a fresh connection to the same endpoint, which
  // is not blamed for the stale one.
  if (replays_stale_connection(error)) {
    // Same endpoint, fresh connection: if that fails too, the endpoint is to blame.
    upstream_->stats(*endpoint_).stale_retries.add();
    ++stale_retries_;
    --attempts_;
    if (UpstreamConnection* conn = endpoint_->pool->acquire_new(this)) use_connection(conn);
    flush();
    return;
  }
  const auto& cb = upstream_->config().circuit_breaker;
  bool connect = error == UpstreamError::connect_failure || error == UpstreamError::connect_timeout;
  // An invalid response is always the endpoint's fault.
  bool counted =
      cb && phase_ != Phase::tunnel &&
      (error == UpstreamError::protocol || (connect ? cb->on_connect_failure : cb->on_reset));
  end_attempt(breaker_result(counted));
  if (done()) return;
  if (discard_response_) {  // the retry was decided when the response head arrived
    discard_response_ = false;
    schedule_retry();
    return;
  }
  if (phase_ == Phase::tunnel) {
    close_gracefully();
    return;
  }
  if (!retract_response()) {
    close();  // part of the response went out: a broken connection is the only honest signal
    return;
  }
  const RetryPolicy* policy = route_state_ ? route_state_->retry.get() : nullptr;
  // An invalid response is retried as a reset is: the connection's answer is unusable.
  bool retriable = policy && policy->retries(connect ? RetryOn::connect_failure : RetryOn::reset);
  if (try_retry(connect ? 0 : 1, retriable)) {
    schedule_retry();
    return;
  }
  switch (reason) {
    case Reason::upstream_connect_failure:
      local_reply(reason, "could not connect to the upstream");
      break;
    case Reason::upstream_protocol_error:
      local_reply(reason, detail.empty() ? "the upstream sent an invalid response" : detail);
      break;
    default:
      local_reply(reason, "the upstream closed the connection before responding");
      break;
  }
}

void Downstream::arm_request_timer() {
  std::uint64_t due = route_deadline_ms_;
  std::uint64_t body_idle = listener_.config->body_idle_timeout_ms;
  if (body_idle && request_has_body() && !request_complete_ && !upgrade_) {
    std::uint64_t body_due = body_activity_ms_ + body_idle;
    due = due ? std::min(due, body_due) : body_due;
  }
  if (due == 0) {
    arm_timer(0);  // no deadline
    return;
  }
  std::uint64_t now = uv_now(worker_.loop());
  arm_timer(due > now ? due - now : 1);
}

bool Downstream::awaiting_client_body() const {
  if (phase_ != Phase::request || request_complete_ || !request_has_body() || upgrade_)
    return false;
  if (read_paused_) return false;  // our backpressure (a slow upstream), not the client
  return !(buffers_ && buffers_->info.expect_continue && !sent_continue_ && minor_version_ == 1);
}

void Downstream::client_timeout(const char* detail) {
  if (up_) {
    up_->close();
    up_ = nullptr;
  }
  end_attempt(CallResult::cancelled);  // not the endpoint's doing: no outcome, no blame
  retry_pending_ = false;
  local_reply(Reason::request_timeout, detail, true);
}

void Downstream::on_request_timeout() {
  std::uint64_t now = uv_now(worker_.loop());
  bool route_expired = route_deadline_ms_ && now >= route_deadline_ms_;
  std::uint64_t body_idle = listener_.config->body_idle_timeout_ms;
  bool awaiting_body = awaiting_client_body();
  if (!route_expired) {
    if (awaiting_body && body_idle && now >= body_activity_ms_ + body_idle) {
      client_timeout("no request body bytes arrived for the listener's timeouts.body_idle");
      return;
    }
    // Not the client's turn (we stopped reading, or it waits for 100 Continue): its clock
    // starts again when it is.
    if (!awaiting_body) body_activity_ms_ = now;
    arm_request_timer();  // the body moved on, or is complete: the next deadline
    return;
  }
  if (awaiting_body) {
    client_timeout("the route timeout expired before the request body arrived");
    return;
  }
  bool blamed = false;
  if (up_) {
    record_upstream_outcome(static_cast<int>(UpstreamOutcome::timeout));
    up_->close();
    up_ = nullptr;
    const auto& cb = upstream_->config().circuit_breaker;
    blamed = cb && cb->on_timeout;
  }
  end_attempt(breaker_result(blamed));
  local_reply(Reason::upstream_timeout, "the route timeout expired", false);
}

}  // namespace bulwark
