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
    x().pending_reply = true;
    x().pending_reason = reason;
    b().pending_detail.assign(detail);
    x().pending_status = status;
    return 0;
  }
  local_reply(reason, detail, true, status);
  return HPE_PAUSED;
}

int Downstream::start_request() {
  phase_ = Phase::request;
  method_ = parser_.method;
  x().request_upgrade = parser_.upgrade != 0;
  // HTTP/1.x with x > 1 is served as HTTP/1.1 (RFC 9110 6.2: same major version).
  minor_version_ = parser_.http_minor > 0 ? 1 : 0;
  x().head_request = parser_.method == HTTP_HEAD;
  b().info = inspect_request(b().headers);
  const ListenerConfig& lc = *listener_.config;

  if (b().info.request_id.empty() || !printable_id(b().info.request_id)) {
    worker_.ids().next(b().request_id);
    x().request_id = std::string_view(b().request_id, sizeof b().request_id);
  } else {
    // Owned: the id outlives anything that may happen to the head buffer (log, retries).
    b().request_id_copy.assign(b().info.request_id);
    x().request_id = b().request_id_copy;
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
  std::string_view target = origin_form(b().url);
  if (target.empty()) {
    local_reply(Reason::bad_request, "invalid request target", true);
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
    x().request_framing = BodyFraming::chunked;
  } else if (parser_.flags & F_CONTENT_LENGTH) {
    // Kept even when 0: a POST without it may be answered 411 (RFC 9110 8.6).
    x().request_framing = BodyFraming::content_length;
    x().request_content_length = parser_.content_length;  // llhttp counts it down as it reads
    if (parser_.content_length > lc.max_body_bytes) {
      local_reply(Reason::body_too_large, "request body exceeds the listener's max_body_bytes",
                  true);
      return HPE_PAUSED;
    }
  }
  if (b().info.expect_other)
    return reply_from_headers(Reason::bad_request, "unsupported Expect", 417);
  x().upgrade = parser_.upgrade && !b().info.upgrade.empty();

  std::string_view host = target_authority(b().url);
  if (host.empty()) host = b().info.host;
  const char* method = llhttp_method_name(static_cast<llhttp_method_t>(method_));
  x().route = listener_.router->match(method, target_path(target), host, b().headers);
  if (x().route < 0) {
    x().route_stats = nullptr;
    return reply_from_headers(Reason::no_route, "no route matches the request");
  }
  x().route_stats = &listener_.stats->routes[static_cast<std::size_t>(x().route)];
  x().upstream = listener_.route_upstreams[static_cast<std::size_t>(x().route)];
  x().route_state = listener_.route_states[static_cast<std::size_t>(x().route)];
  std::uint64_t timeout = lc.routes[static_cast<std::size_t>(x().route)].timeout_ms;
  std::uint64_t now = uv_now(worker_.loop());
  x().route_deadline_ms = timeout ? now + timeout : 0;
  x().body_activity_ms = now;
  arm_request_timer();
  if (x().route_state->retry) {
    x().route_state->budget->record_request(now);
    x().replay_enabled = x().route_state->retry->method_allowed(method) && !x().upgrade;
  }
  run_admission(false);
  return 0;
}

void Downstream::run_admission(bool resumed) {
  Exchange& x = this->x();
  const auto& stages = worker_.admission_stages();
  while (x.next_stage < stages.size()) {
    AdmissionStage& stage = *stages[x.next_stage++];
    Verdict v = stage.enter(x);
    if (v.kind == Verdict::Kind::wait) {
      // The body, if any, is kept in b().queued_bytes meanwhile.
      x.waiting_stage = &stage;
      return;
    }
    if (v.kind == Verdict::Kind::reject) {
      refuse(v, resumed);
      return;
    }
  }
  if (!resumed) {
    start_attempt();
    return;
  }
  if (done()) return;
  if (!start_attempt() || !x.up) return;  // no endpoint, or waiting for a pooled connection
  flush();
  b().queued_bytes.clear();
  if (!done() && !x.request_complete && pending_input_.size() < kHighWater) resume_reading();
}

void Downstream::refuse(const Verdict& v, bool resumed) {
  // While the head is being handled the reply may wait for the end of an empty request (the
  // connection stays usable); later it goes out at once.
  if (resumed)
    local_reply(v.reason, v.detail);
  else
    reply_from_headers(v.reason, v.detail);
}

void Downstream::resume_admission(const Verdict& v) {
  x().waiting_stage = nullptr;
  if (done()) return;
  if (v.kind == Verdict::Kind::reject) {
    refuse(v, true);
    return;
  }
  run_admission(true);
}

void Downstream::leave_admission() {
  Exchange& x = this->x();
  if (x.waiting_stage) {
    x.waiting_stage->cancel(x);
    x.waiting_stage = nullptr;
  }
  b().queued_bytes.clear();
  x.bulkhead.release();  // may admit another waiting request right away
}

void Downstream::report_breaker(CallResult result) { x().claim.report(result); }

CallResult Downstream::breaker_result(bool counted) const {
  return counted ? CallResult::failure : CallResult::cancelled;
}

void Downstream::end_attempt(CallResult result) {
  UpstreamEndpoint* endpoint = x().claim.endpoint();
  if (!endpoint) return;
  if (waiting()) endpoint->pool->cancel_wait(this);
  x().claim.end(result);
}

void Downstream::upstream_add(const char* data, std::size_t len, bool borrowed) {
  if (x().replay_enabled && !x().replay_overflow) {
    std::string& replay = b().replay;
    if (replay.size() + len > x().route_state->retry->config().max_body_bytes) {
      x().replay_overflow = true;  // too big to keep: this request will not be retried
      replay.clear();
    } else {
      replay.append(data, len);
    }
  }
  if (x().up) {
    if (borrowed)
      x().up->out().add(data, len);
    else
      x().up->out().add_copy(std::string_view(data, len));
  } else if (x().waiting_stage || waiting()) {
    b().queued_bytes.append(data, len);
    if (b().queued_bytes.size() > kHighWater) pause_reading();
  }
}

void Downstream::upstream_add_chunk_header(std::uint64_t size) {
  x().body_activity_ms = uv_now(worker_.loop());
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "%llx\r\n", static_cast<unsigned long long>(size));
  upstream_add(buf, static_cast<std::size_t>(n), false);
}

bool Downstream::start_attempt() {
  std::uint64_t now = uv_now(worker_.loop());
  Upstream::Pick pick = x().upstream->pick(now, x().failed_endpoint);
  UpstreamEndpoint* endpoint = pick.endpoint;
  if (!endpoint) {
    Reason reason = pick.circuit_open ? Reason::circuit_open : Reason::no_healthy_upstream;
    const char* detail = pick.circuit_open ? "every endpoint's circuit breaker is open"
                                           : "the upstream has no endpoints";
    if (pick.circuit_open) {
      // Retry-After: whole seconds until the earliest endpoint may be probed, at least 1.
      std::uint64_t seconds = std::max<std::uint64_t>(1, (pick.retry_after_ms + 999) / 1000);
      int n = std::snprintf(x().reply_extra, sizeof x().reply_extra, "Retry-After: %llu\r\n",
                            static_cast<unsigned long long>(seconds));
      x().reply_extra_len = static_cast<std::size_t>(n);
    }
    if (x().request_complete || !in_execute_) {
      local_reply(reason, detail);
      return false;
    }
    return reply_from_headers(reason, detail) == 0;
  }
  x().claim.begin(*x().upstream, *endpoint, pick.probe, now, worker_.loop());
  b().endpoint_name = endpoint->name();
  // A full pool: wait for a connection (on_pool_connection); request bytes are kept meanwhile.
  if (UpstreamConnection* conn = endpoint->pool->acquire(this)) use_connection(conn);
  return true;
}

void Downstream::use_connection(UpstreamConnection* conn) {
  x().up = conn;
  ++x().attempts;
  conn->attach(this, x().head_request);
  x().last_attempt_reused = conn->reused();
  UpstreamRequestHead head;
  head.method = llhttp_method_name(static_cast<llhttp_method_t>(method_));
  head.target = origin_form(b().url);
  // Exactly one Host (RFC 9112 3.2): an absolute-form target's authority replaces the
  // client's Host (3.2.2); a client without one (HTTP/1.0) gets the endpoint's address.
  head.host = target_authority(b().url);
  if (head.host.empty()) head.host = b().info.host_count ? b().info.host : b().endpoint_name;
  head.client_ip = client_ip_;
  head.request_id = x().request_id;
  head.framing = x().request_framing;
  head.content_length = x().request_content_length;
  if (x().upgrade) head.upgrade = b().info.upgrade;
  write_upstream_request_head(b().upstream_head, b().headers, head);
  x().up->out().add(b().upstream_head);
  if (x().attempts > 1)
    x().up->out().add(b().replay);  // a retry: the body so far, from the replay copy
  else if (!b().queued_bytes.empty())
    x().up->out().add(b().queued_bytes);  // cleared after the next flush
  if (conn->connected()) send_continue();
  if (x().route_state && x().route_state->retry &&
      x().route_state->retry->config().per_try_timeout_ms) {
    arm_attempt_timer(
        attempt_timeout_ms(x().route_state->retry->config().per_try_timeout_ms, time_left_ms()));
  }
}

void Downstream::on_pool_connection(UpstreamConnection* conn) {
  if (done() || !x().claim.endpoint()) {  // cannot happen while waiting is cancelled on every exit
    conn->release(true);
    return;
  }
  use_connection(conn);
  flush();
  b().queued_bytes.clear();
  if (!done() && !x().request_complete && pending_input_.size() < kHighWater) resume_reading();
}

void Downstream::send_continue() {
  if (x().sent_continue || !b().info.expect_continue || minor_version_ == 0 ||
      x().request_complete || x().response_started || !request_has_body())
    return;
  x().sent_continue = true;
  x().body_activity_ms = uv_now(worker_.loop());  // the client may send its body from now on
  b().out.add_copy("HTTP/1.1 100 Continue\r\n\r\n");
}

void Downstream::forward_body(const char* data, std::size_t len) {
  x().body_activity_ms = uv_now(worker_.loop());
  if (x().pending_reply) return;  // answered locally: discarded
  upstream_add(data, len, true);
  x().body_sent_upstream = x().up != nullptr || x().waiting_stage || waiting();
}

void Downstream::end_request_body() {
  if (x().request_framing != BodyFraming::chunked) return;
  upstream_add("0\r\n", 3, false);
  if (!b().trailers.empty()) upstream_add(b().trailers.data(), b().trailers.size(), false);
  upstream_add("\r\n", 2, false);
}

void Downstream::detach_upstream(bool reusable, CallResult result) {
  if (x().up) {
    x().up->release(reusable);
    x().up = nullptr;
  }
  end_attempt(result);
}

void Downstream::record_upstream_outcome(int outcome) {
  if (x().claim.endpoint()) x().upstream->stats(*x().claim.endpoint()).outcomes[outcome].add();
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
    if (x().sent_continue) return;
    x().sent_continue = true;
  }
  std::string& head = b().scratch;
  write_interim_response_head(head, conn.headers(), conn.status(), conn.status_text());
  b().out.add_copy(head);
  x().bytes_out += head.size();
}

void Downstream::on_upstream_headers(UpstreamConnection& conn) {
  x().status = conn.status();
  if (x().status >= 200 && retry_response(conn)) {
    x().discard_response = true;  // read and drop the body, then retry
    return;
  }
  // The response starts: no retry from here on, and the replay copy is not needed.
  if (buffers_) uv_timer_stop(&buffers_->attempt_timer);
  x().replay_enabled = false;
  b().replay.clear();
  bool no_body = x().head_request || x().status == 204 || x().status == 304 || x().status == 101;
  std::string_view upgrade;
  if (x().status == 101) {
    if (!x().upgrade) return;  // unsolicited 101: handled as an error at completion
    upgrade = conn.headers().get("upgrade");
    x().response_framing = BodyFraming::none;
  } else if (no_body) {
    x().response_framing = conn.has_content_length() && x().status != 204
                               ? BodyFraming::content_length
                               : BodyFraming::none;
  } else if (conn.has_content_length()) {
    x().response_framing = BodyFraming::content_length;
  } else if (minor_version_ == 1) {
    x().response_framing = BodyFraming::chunked;  // chunked or close-delimited upstream body
  } else {
    x().response_framing = BodyFraming::none;  // HTTP/1.0 client: the close ends the body
    close_after_response_ = true;
  }
  x().upstream_chunked = conn.body_chunked();
  if ((x().upgrade && x().status != 101) || draining_) close_after_response_ = true;

  DownstreamResponseHead head;
  head.status = x().status;
  head.reason = conn.status_text();
  head.minor_version = minor_version_;
  head.framing = x().response_framing;
  head.content_length = conn.content_length();
  head.close = close_after_response_;
  head.keep_alive_1_0 = minor_version_ == 0 && !close_after_response_;
  head.upgrade = upgrade;
  char extra[160];
  std::size_t extra_len = 0;
  if (x().attempts > 1) {
    int n = std::snprintf(extra, sizeof extra, "x-bulwark-attempts: %d\r\n", x().attempts);
    extra_len = static_cast<std::size_t>(n);
  }
  if (x().ratelimit_header_len && extra_len + x().ratelimit_header_len < sizeof extra) {
    std::memcpy(extra + extra_len, x().ratelimit_header, x().ratelimit_header_len);
    extra_len += x().ratelimit_header_len;
  }
  head.extra = std::string_view(extra, extra_len);
  write_downstream_response_head(b().response_head, conn.headers(), head);
  b().out.add(b().response_head);
  x().bytes_out += b().response_head.size();
  x().response_started = true;
}

void Downstream::on_upstream_chunk_header(std::uint64_t size) {
  if (x().discard_response) return;
  x().response_chunk_size = size;
  if (x().response_framing == BodyFraming::chunked && x().upstream_chunked && size > 0)
    b().out.add_chunk_header(size);
}

void Downstream::on_upstream_body(const char* data, std::size_t len) {
  if (x().discard_response) return;
  x().bytes_out += len;
  if (x().response_framing == BodyFraming::chunked && !x().upstream_chunked) {
    b().out.add_chunk_header(len);
    b().out.add(data, len);
    b().out.add_copy("\r\n");
    return;
  }
  b().out.add(data, len);
}

void Downstream::on_upstream_chunk_complete() {
  if (x().discard_response) return;
  if (x().response_framing == BodyFraming::chunked && x().upstream_chunked &&
      x().response_chunk_size > 0)
    b().out.add_copy("\r\n");
}

void Downstream::on_upstream_complete() {
  if (x().status == 101) {
    if (!x().upgrade) {
      record_upstream_outcome(static_cast<int>(UpstreamOutcome::protocol_error));
      upstream_failed(Reason::upstream_protocol_error, UpstreamError::protocol,
                      "the upstream switched protocols (101) for a request without Upgrade");
      return;
    }
    record_upstream_outcome(static_cast<int>(UpstreamOutcome::success));
    report_breaker(CallResult::success);
    phase_ = Phase::tunnel;
    x().up->start_tunnel();
    if (client_eof_) {  // a pipelined upgrade after the client's half-close: nothing to tunnel
      close_gracefully();
      return;
    }
    arm_timer(listener_.config->idle_timeout_ms);
    flush();
    resume_reading();
    return;
  }
  const auto& cb = x().upstream->config().circuit_breaker;
  if (x().discard_response) {
    // A retriable response, read to its end so the connection can be reused: retry now.
    x().discard_response = false;
    record_upstream_outcome(
        static_cast<int>(x().status >= 500 ? UpstreamOutcome::failure : UpstreamOutcome::success));
    x().failed_endpoint = x().claim.endpoint();
    detach_upstream(x().request_complete, cb && cb->counts_status(x().status)
                                              ? CallResult::failure
                                              : CallResult::success);
    x().status = 0;
    schedule_retry();
    return;
  }
  if (x().response_framing == BodyFraming::chunked) {
    if (x().upstream_chunked && x().up && x().up->trailers().size() > 0) {
      // Trailer fields go on as trailers of the chunked response (HTTP/1.1 clients only: an
      // HTTP/1.0 client's response is not chunked and has nowhere to carry them).
      write_last_chunk(b().scratch, x().up->trailers());
      b().out.add_copy(b().scratch);
      x().bytes_out += b().scratch.size();
    } else {
      b().out.add_copy("0\r\n\r\n");
    }
  }
  record_upstream_outcome(
      static_cast<int>(x().status >= 500 ? UpstreamOutcome::failure : UpstreamOutcome::success));
  if (!x().request_complete) close_after_response_ = true;
  flush();
  detach_upstream(x().request_complete,
                  cb && cb->counts_status(x().status) ? CallResult::failure : CallResult::success);
  if (closing_) return;
  finish_request();
}

void Downstream::on_upstream_tunnel_data(const char* data, std::size_t len) {
  x().bytes_out += len;
  b().out.add(data, len);
  arm_timer(listener_.config->idle_timeout_ms);
}

void Downstream::on_upstream_batch_end() { flush(); }

void Downstream::on_upstream_drained() {
  if (read_paused_ && pending_input_.size() < kHighWater && !x().request_complete) resume_reading();
  if (phase_ == Phase::tunnel) resume_reading();
}

void Downstream::on_upstream_error(UpstreamError error, std::string_view detail) {
  x().up = nullptr;  // the connection is closing already
  if (error == UpstreamError::local_resources) {
    // Bulwark's own shortage: the endpoint and its breaker hear nothing of it.
    static LogThrottle throttle;
    throttle.log(LogLevel::warn, "upstream " + x().upstream->config().name +
                                     ": out of file descriptors; answering 503 overloaded");
    end_attempt(CallResult::cancelled);
    if (done()) return;
    if (x().response_started) {
      close();
      return;
    }
    int n = std::snprintf(x().reply_extra, sizeof x().reply_extra, "Retry-After: 1\r\n");
    x().reply_extra_len = static_cast<std::size_t>(n);
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
  return error == UpstreamError::reset && x().last_attempt_reused && !x().body_sent_upstream &&
         !request_has_body() && x().stale_retries < 3 && !x().response_started &&
         phase_ != Phase::tunnel && x().claim.endpoint() && !done();
}

bool Downstream::retract_response() {
  if (!x().response_started) return true;
  if (x().response_committed || x().local_reply_sent) return false;
  // Only the response head (and body pieces of the same read) are in the batch: drop them.
  // An interim response or 100 Continue queued with them is dropped too; the local reply is
  // a valid final answer without it.
  x().bytes_out -= std::min(x().bytes_out, static_cast<std::uint64_t>(b().out.bytes()));
  b().out.clear();
  x().response_started = false;
  x().response_framing = BodyFraming::none;
  x().upstream_chunked = false;
  x().status = 0;
  return true;
}

void Downstream::upstream_failed(Reason reason, UpstreamError error, std::string_view detail) {
  if (x().claim.endpoint()) x().failed_endpoint = x().claim.endpoint();
  if (x().up) {
    x().up->close();
    x().up = nullptr;
  }
  // A kept-alive connection that the upstream closed just as we reused it: nothing was
  // processed, so the request goes again on a fresh connection to the same endpoint, which
  // is not blamed for the stale one.
  if (replays_stale_connection(error)) {
    // Same endpoint, fresh connection: if that fails too, the endpoint is to blame.
    x().upstream->stats(*x().claim.endpoint()).stale_retries.add();
    ++x().stale_retries;
    --x().attempts;
    if (UpstreamConnection* conn = x().claim.endpoint()->pool->acquire_new(this))
      use_connection(conn);
    flush();
    return;
  }
  const auto& cb = x().upstream->config().circuit_breaker;
  bool connect = error == UpstreamError::connect_failure || error == UpstreamError::connect_timeout;
  // An invalid response is always the endpoint's fault.
  bool counted =
      cb && phase_ != Phase::tunnel &&
      (error == UpstreamError::protocol || (connect ? cb->on_connect_failure : cb->on_reset));
  end_attempt(breaker_result(counted));
  if (done()) return;
  if (x().discard_response) {  // the retry was decided when the response head arrived
    x().discard_response = false;
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
  const RetryPolicy* policy = x().route_state ? x().route_state->retry.get() : nullptr;
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
  std::uint64_t due = x().route_deadline_ms;
  std::uint64_t body_idle = listener_.config->body_idle_timeout_ms;
  if (body_idle && request_has_body() && !x().request_complete && !x().upgrade) {
    std::uint64_t body_due = x().body_activity_ms + body_idle;
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
  if (phase_ != Phase::request || x().request_complete || !request_has_body() || x().upgrade)
    return false;
  if (read_paused_) return false;  // our backpressure (a slow upstream), not the client
  return !(buffers_ && buffers_->info.expect_continue && !x().sent_continue && minor_version_ == 1);
}

void Downstream::client_timeout(const char* detail) {
  if (x().up) {
    x().up->close();
    x().up = nullptr;
  }
  end_attempt(CallResult::cancelled);  // not the endpoint's doing: no outcome, no blame
  x().retry_pending = false;
  local_reply(Reason::request_timeout, detail, true);
}

void Downstream::on_request_timeout() {
  std::uint64_t now = uv_now(worker_.loop());
  bool route_expired = x().route_deadline_ms && now >= x().route_deadline_ms;
  std::uint64_t body_idle = listener_.config->body_idle_timeout_ms;
  bool awaiting_body = awaiting_client_body();
  if (!route_expired) {
    if (awaiting_body && body_idle && now >= x().body_activity_ms + body_idle) {
      client_timeout("no request body bytes arrived for the listener's timeouts.body_idle");
      return;
    }
    // Not the client's turn (we stopped reading, or it waits for 100 Continue): its clock
    // starts again when it is.
    if (!awaiting_body) x().body_activity_ms = now;
    arm_request_timer();  // the body moved on, or is complete: the next deadline
    return;
  }
  if (awaiting_body) {
    client_timeout("the route timeout expired before the request body arrived");
    return;
  }
  bool blamed = false;
  if (x().up) {
    record_upstream_outcome(static_cast<int>(UpstreamOutcome::timeout));
    x().up->close();
    x().up = nullptr;
    const auto& cb = x().upstream->config().circuit_breaker;
    blamed = cb && cb->on_timeout;
  }
  end_attempt(breaker_result(blamed));
  local_reply(Reason::upstream_timeout, "the route timeout expired", false);
}

}  // namespace bulwark
