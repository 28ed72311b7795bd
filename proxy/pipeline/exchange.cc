// An Exchange's request side: validate and route the request, run the admission stages, pick
// an endpoint and a pooled connection, stream the request body up, and the request's timeouts.
// The response side is in exchange_response.cc, retries in exchange_retry.cc.
#include "pipeline/exchange.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "admin/stats.h"
#include "core/log.h"
#include "http/grpc.h"
#include "pipeline/downstream.h"
#include "pipeline/load_shedding_stage.h"
#include "pipeline/rate_limit_stage.h"
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

int Exchange::reply_from_headers(Reason reason, std::string_view detail, int reply_status) {
  bool has_body = request_start.chunked || request_start.content_length > 0;
  if (!has_body && !request_start.upgrade && request_start.defer_reply) {
    // Answer once the (empty) request is complete, keeping the connection.
    pending_reply = true;
    pending_reason = reason;
    client.b().pending_detail.assign(detail);
    pending_status = reply_status;
    return 0;
  }
  client.local_reply(reason, detail, true, reply_status);
  return HPE_PAUSED;
}

int Exchange::start_request(const RequestStart& start) {
  request_start = start;
  client.set_phase(Downstream::Phase::request);
  request_upgrade = request_start.upgrade;
  // HTTP/1.x with x > 1 is served as HTTP/1.1 (RFC 9110 6.2: same major version). (An HTTP/2
  // stream comes as 1.1: its version is the connection's, not the request's.)
  client.begin_request(request_start.method, request_start.http_minor > 0 ? 1 : 0);
  head_request = request_start.method == HTTP_HEAD;
  client.b().info = inspect_request(client.b().headers);
  view = client.listener().view;  // the configuration this request is served under
  pin.reset(view->generation);
  const ListenerConfig& lc = *view->config;

  if (client.b().info.request_id.empty() || !printable_id(client.b().info.request_id)) {
    client.worker().ids().next(client.b().request_id);
    request_id = std::string_view(client.b().request_id, sizeof client.b().request_id);
  } else {
    // Owned: the id outlives anything that may happen to the head buffer (log, retries).
    client.b().request_id_copy.assign(client.b().info.request_id);
    request_id = client.b().request_id_copy;
  }
  if (client.b().info.connection_close ||
      (client.minor_version() == 0 && !client.b().info.connection_keep_alive) || client.draining())
    client.close_after_response();

  if (request_start.http_major != 1) {
    client.local_reply(Reason::bad_request, "unsupported HTTP version", true);
    return HPE_PAUSED;
  }
  if (request_start.method == HTTP_CONNECT) {
    client.local_reply(Reason::bad_request, "CONNECT is not supported", true);
    return HPE_PAUSED;
  }
  if (client.b().info.host_count > 1) {
    client.local_reply(Reason::bad_request, "more than one Host header", true);
    return HPE_PAUSED;
  }
  if (client.minor_version() == 1 && client.b().info.host_count == 0) {
    client.local_reply(Reason::bad_request, "missing Host header", true);
    return HPE_PAUSED;
  }
  if (client.b().info.host_count == 1 && !valid_host_value(client.b().info.host)) {  // RFC 9112 3.2
    client.local_reply(Reason::bad_request, "invalid Host header", true);
    return HPE_PAUSED;
  }
  std::string_view target = origin_form(client.b().url);
  if (target.empty()) {
    client.local_reply(Reason::bad_request, "invalid request target", true);
    return HPE_PAUSED;
  }
  // An absolute-form target must name a host (RFC 9110 4.2.1): "http:///x" or "http://u@/x"
  // is invalid, not a target without an authority (Host would be kept, disagreeing with it);
  // the authority becomes Host, so it must be a valid Host value.
  if (client.b().url.front() != '/' && client.b().url != "*" &&
      (host_without_port(target_authority(client.b().url)).empty() ||
       !valid_host_value(target_authority(client.b().url)))) {
    client.local_reply(Reason::bad_request, "absolute-form target without a valid host", true);
    return HPE_PAUSED;
  }
  // Framing (RFC 9112 6). llhttp already refuses a non-empty Transfer-Encoding with a
  // Content-Length, and duplicate lengths; an empty Transfer-Encoding line counts too.
  if (client.b().info.transfer_encoding_count > 0) {
    if (client.b().info.content_length_count > 0) {
      client.local_reply(Reason::bad_request, "both Content-Length and Transfer-Encoding", true);
      return HPE_PAUSED;
    }
    if (client.minor_version() == 0) {  // RFC 9112 6.1: faulty framing in HTTP/1.0
      client.local_reply(Reason::bad_request, "Transfer-Encoding in an HTTP/1.0 request", true);
      return HPE_PAUSED;
    }
    std::string_view coding;
    switch (transfer_coding(client.b().headers, &coding)) {
      case TransferCoding::invalid:
        client.b()
            .pending_detail.assign("invalid Transfer-Encoding: ")
            .append(coding.substr(0, 64));
        client.local_reply(Reason::bad_request, client.b().pending_detail, true);
        return HPE_PAUSED;
      case TransferCoding::unsupported:
        // RFC 9112 6.1: 501 for a transfer coding the server does not understand. No reply
        // reason has 501: bad-request, with the status overridden.
        client.b()
            .pending_detail.assign("unsupported transfer coding: ")
            .append(coding.substr(0, 64));
        client.local_reply(Reason::bad_request, client.b().pending_detail, true, 501);
        return HPE_PAUSED;
      case TransferCoding::absent:
      case TransferCoding::chunked:
        break;
    }
  }
  if (request_start.chunked) {
    request_framing = BodyFraming::chunked;
  } else if (request_start.has_content_length) {
    // Kept even when 0: a POST without it may be answered 411 (RFC 9110 8.6).
    request_framing = BodyFraming::content_length;
    request_content_length = request_start.content_length;
    if (request_start.content_length > lc.max_body_bytes) {
      client.local_reply(Reason::body_too_large,
                         "request body exceeds the listener's max_body_bytes", true);
      return HPE_PAUSED;
    }
  }
  if (client.b().info.expect_other)
    return reply_from_headers(Reason::bad_request, "unsupported Expect", 417);
  upgrade = request_start.upgrade && !client.b().info.upgrade.empty();

  std::string_view host = target_authority(client.b().url);
  if (host.empty()) host = client.b().info.host;
  const char* method = llhttp_method_name(static_cast<llhttp_method_t>(client.method()));
  route = view->router->match(method, target_path(target), host, client.b().headers);
  if (route < 0) {
    route_stats = nullptr;
    return reply_from_headers(Reason::no_route, "no route matches the request");
  }
  route_stats = view->route_stats[static_cast<std::size_t>(route)];
  upstream = view->route_upstreams[static_cast<std::size_t>(route)];
  route_state = view->route_states[static_cast<std::size_t>(route)];
  std::uint64_t timeout = lc.routes[static_cast<std::size_t>(route)].timeout_ms;
  // A gRPC client's own deadline bounds the route's (a zero deadline is expired already: 1 ms).
  if (std::string_view g = client.b().info.grpc_timeout; !g.empty()) {
    bool valid = false;
    std::uint64_t ms = std::max<std::uint64_t>(grpc_timeout_ms(g, valid), 1);
    if (valid) timeout = timeout ? std::min(timeout, ms) : ms;
  }
  std::uint64_t now = uv_now(client.worker().loop());
  route_deadline_ms = timeout ? now + timeout : 0;
  body_activity_ms = now;
  arm_request_timer();
  if (route_state->retry) {
    route_state->budget->record_request(now);
    replay_enabled = route_state->retry->method_allowed(method) && !upgrade;
  }
  run_admission(false);
  return 0;
}

void Exchange::run_admission(bool resumed) {
  Exchange& x = *this;
  const auto& stages = client.worker().admission_stages();
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
  if (client.done()) return;
  if (!start_attempt() || !x.attempt.conn)
    return;  // no endpoint, or waiting for a pooled connection
  client.flush();
  client.b().queued_bytes.clear();
  if (!client.done() && !x.request_complete && client.pending_input_size() < kHighWater)
    client.resume_reading();
}

void Exchange::refuse(const Verdict& v, bool resumed) {
  // While the head is being handled the reply may wait for the end of an empty request (the
  // connection stays usable); later it goes out at once.
  if (resumed)
    client.local_reply(v.reason, v.detail, false, v.status);
  else
    reply_from_headers(v.reason, v.detail, v.status);
}

void Exchange::resume_admission(const Verdict& v) {
  waiting_stage = nullptr;
  if (client.done()) return;
  if (v.kind == Verdict::Kind::reject) {
    refuse(v, true);
    return;
  }
  run_admission(true);
}

void Exchange::leave_admission() {
  Exchange& x = *this;
  if (x.waiting_stage) {
    x.waiting_stage->cancel(x);
    x.waiting_stage = nullptr;
  }
  client.b().queued_bytes.clear();
  x.bulkhead.release();  // may admit another waiting request right away
  x.shed.release();      // lets a waiting request in on the next loop turn
}

void Exchange::report_breaker(CallResult result) { attempt.claim.report(result); }

CallResult Exchange::breaker_result(bool counted) const {
  return counted ? CallResult::failure : CallResult::cancelled;
}

void Exchange::end_attempt(CallResult result) {
  if (client.has_buffers()) uv_timer_stop(&client.b().per_try_timer);
  attempt.end(result);
}

void Exchange::upstream_add(const char* data, std::size_t len, bool borrowed) {
  if (replay_enabled && !replay_overflow) {
    std::string& replay = client.b().replay;
    if (replay.size() + len > route_state->retry->config().max_body_bytes) {
      replay_overflow = true;  // too big to keep: this request will not be retried
      replay.clear();
    } else {
      replay.append(data, len);
    }
  }
  if (attempt.conn) {
    if (borrowed)
      attempt.conn->out().add(data, len);
    else
      attempt.conn->out().add_copy(std::string_view(data, len));
  } else if (waiting_stage || attempt.waiting()) {
    client.b().queued_bytes.append(data, len);
    if (client.b().queued_bytes.size() > kHighWater) client.pause_reading();
  }
}

void Exchange::upstream_add_chunk_header(std::uint64_t size) {
  body_activity_ms = uv_now(client.worker().loop());
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "%llx\r\n", static_cast<unsigned long long>(size));
  upstream_add(buf, static_cast<std::size_t>(n), false);
}

bool Exchange::start_attempt() {
  std::uint64_t now = uv_now(client.worker().loop());
  Upstream::Pick pick = upstream->pick(now, failed_endpoint);
  UpstreamEndpoint* endpoint = pick.endpoint;
  if (!endpoint) {
    Reason reason = pick.circuit_open ? Reason::circuit_open : Reason::no_healthy_upstream;
    const char* detail = pick.circuit_open ? "every endpoint's circuit breaker is open"
                                           : "the upstream has no endpoints";
    if (pick.circuit_open) {
      // Retry-After: whole seconds until the earliest endpoint may be probed, at least 1.
      std::uint64_t seconds = std::max<std::uint64_t>(1, (pick.retry_after_ms + 999) / 1000);
      int n = std::snprintf(reply_extra, sizeof reply_extra, "Retry-After: %llu\r\n",
                            static_cast<unsigned long long>(seconds));
      reply_extra_len = static_cast<std::size_t>(n);
    }
    if (request_complete || !client.in_execute()) {
      client.local_reply(reason, detail);
      return false;
    }
    return reply_from_headers(reason, detail) == 0;
  }
  UpstreamStream* conn =
      attempt.begin(*upstream, *endpoint, pick.probe, now, client.worker().loop());
  client.b().endpoint_name = endpoint->name();
  // A full pool: wait for a connection (on_pool_connection); request bytes are kept meanwhile.
  if (conn) use_connection(conn);
  return true;
}

void Exchange::use_connection(UpstreamStream* conn) {
  attempt.conn = conn;
  if (ShedGate* gate = shed.gate()) {
    attempt_start_us = uv_hrtime() / 1000;
    attempt_inflight = static_cast<int>(gate->shedder().in_flight());
  }
  ++attempts;
  conn->attach(&attempt, head_request);
  last_attempt_reused = conn->reused();
  UpstreamRequestHead head;
  head.method = llhttp_method_name(static_cast<llhttp_method_t>(client.method()));
  head.target = origin_form(client.b().url);
  // Exactly one Host (RFC 9112 3.2): an absolute-form target's authority replaces the
  // client's Host (3.2.2); a client without one (HTTP/1.0) gets the endpoint's address.
  head.host = target_authority(client.b().url);
  if (head.host.empty())
    head.host = client.b().info.host_count ? client.b().info.host : client.b().endpoint_name;
  head.client_ip = client.client_ip();
  head.request_id = request_id;
  head.framing = request_framing;
  head.content_length = request_content_length;
  if (upgrade) head.upgrade = client.b().info.upgrade;
  head.https = client.tls();
  // A gRPC server is told the deadline Bulwark enforces (the route timeout, already bounded
  // by the client's grpc-timeout, less the time spent; this attempt's per_try_timeout), so
  // it stops working when nobody waits for the answer any more.
  if (client.b().info.grpc && (route_deadline_ms || per_try_ms() != 0)) {
    std::uint64_t left = time_left_ms();
    if (per_try_ms() != 0) left = attempt_timeout_ms(per_try_ms(), left);
    head.grpc_timeout_ms = std::max<std::uint64_t>(left, 1);
  }
  write_upstream_request_head(client.b().upstream_head, client.b().headers, head);
  attempt.conn->out().add(client.b().upstream_head);
  if (attempts > 1)
    attempt.conn->out().add(client.b().replay);  // a retry: the body so far, from the replay copy
  else if (!client.b().queued_bytes.empty())
    attempt.conn->out().add(client.b().queued_bytes);  // cleared after the next flush
  if (conn->connected()) send_continue();
  if (per_try_ms() != 0) arm_per_try_timer(attempt_timeout_ms(per_try_ms(), time_left_ms()));
}

void Exchange::on_pool_connection(UpstreamStream* conn) {
  if (client.done() ||
      !attempt.claim.endpoint()) {  // cannot happen while waiting is cancelled on every exit
    conn->release(true);
    return;
  }
  use_connection(conn);
  client.flush();
  client.b().queued_bytes.clear();
  if (!client.done() && !request_complete && client.pending_input_size() < kHighWater)
    client.resume_reading();
}

void Exchange::send_continue() {
  if (sent_continue || !client.b().info.expect_continue || client.minor_version() == 0 ||
      request_complete || response_started || !request_has_body())
    return;
  sent_continue = true;
  body_activity_ms = uv_now(client.worker().loop());  // the client may send its body from now on
  client.send_continue();
}

void Exchange::forward_body(const char* data, std::size_t len) {
  body_activity_ms = uv_now(client.worker().loop());
  if (pending_reply) return;  // answered locally: discarded
  upstream_add(data, len, true);
  body_sent_upstream = attempt.conn != nullptr || waiting_stage || attempt.waiting();
}

void Exchange::end_request_body() {
  if (request_framing != BodyFraming::chunked) return;
  upstream_add("0\r\n", 3, false);
  if (!client.b().trailers.empty())
    upstream_add(client.b().trailers.data(), client.b().trailers.size(), false);
  upstream_add("\r\n", 2, false);
}

void Exchange::detach_upstream(bool reusable, CallResult result) {
  if (attempt.conn) {
    attempt.conn->release(reusable);
    attempt.conn = nullptr;
  }
  end_attempt(result);
}

void Exchange::record_upstream_outcome(int outcome) {
  if (attempt.claim.endpoint()) upstream->stats(*attempt.claim.endpoint()).outcomes[outcome].add();
}

void Exchange::arm_request_timer() {
  std::uint64_t due = route_deadline_ms;
  std::uint64_t body_idle = client.view().config->body_idle_timeout_ms;
  if (body_idle && request_has_body() && !request_complete && !upgrade) {
    std::uint64_t body_due = body_activity_ms + body_idle;
    due = due ? std::min(due, body_due) : body_due;
  }
  if (due == 0) {
    client.arm_timer(0);  // no deadline
    return;
  }
  std::uint64_t now = uv_now(client.worker().loop());
  client.arm_timer(due > now ? due - now : 1);
}

bool Exchange::awaiting_client_body() const {
  if (client.phase() != Downstream::Phase::request || request_complete ||
      !request_has_body() || upgrade)
    return false;
  if (client.read_paused()) return false;  // our backpressure (a slow upstream), not the client
  return !(client.has_buffers() && client.b().info.expect_continue && !sent_continue &&
           client.minor_version() == 1);
}

void Exchange::client_timeout(const char* detail) {
  if (attempt.conn) {
    attempt.conn->close();
    attempt.conn = nullptr;
  }
  end_attempt(CallResult::cancelled);  // not the endpoint's doing: no outcome, no blame
  retry_pending = false;
  client.local_reply(Reason::request_timeout, detail, true);
}

void Exchange::on_request_timeout() {
  std::uint64_t now = uv_now(client.worker().loop());
  bool route_expired = route_deadline_ms && now >= route_deadline_ms;
  std::uint64_t body_idle = client.view().config->body_idle_timeout_ms;
  bool awaiting_body = awaiting_client_body();
  if (!route_expired) {
    if (awaiting_body && body_idle && now >= body_activity_ms + body_idle) {
      client_timeout("no request body bytes arrived for the listener's timeouts.body_idle");
      return;
    }
    // Not the client's turn (we stopped reading, or it waits for 100 Continue): its clock
    // starts again when it is.
    if (!awaiting_body) body_activity_ms = now;
    arm_request_timer();  // the body moved on, or is complete: the next deadline
    return;
  }
  if (awaiting_body) {
    client_timeout("the route timeout expired before the request body arrived");
    return;
  }
  bool blamed = false;
  if (attempt.conn) {
    record_upstream_outcome(static_cast<int>(UpstreamOutcome::timeout));
    shed_sample(true);
    attempt.conn->close();
    attempt.conn = nullptr;
    const auto& cb = upstream->config().circuit_breaker;
    blamed = cb && cb->on_timeout;
  }
  end_attempt(breaker_result(blamed));
  client.local_reply(Reason::upstream_timeout, "the route timeout expired", false);
}

Exchange::~Exchange() {
  // An exchange never outlives a wait: a queue or Redis must not call it back.
  if (waiting_stage) waiting_stage->cancel(*this);
}

void Exchange::on_admitted() {
  queued = false;
  bulkhead.take(*upstream);
  resume_admission(Verdict::admit());
}

void Exchange::on_shed_admitted() {
  shed_waiting = false;
  shed.take(*upstream->shed_gate(), priority);
  resume_admission(Verdict::admit());
}

void Exchange::on_shed_rejected(const char* detail) {
  shed_waiting = false;
  resume_admission(LoadSheddingStage::shed(*this, detail));
}

void Exchange::shed_sample(bool dropped) {
  if (attempt_start_us == 0) return;
  std::uint64_t now = uv_hrtime() / 1000;
  // What the backend took: not the time its response waited for a slow client to read it.
  std::uint64_t rtt = now - attempt_start_us;
  std::uint64_t waited = attempt.conn ? attempt.conn->read_paused_us() : 0;
  rtt = rtt > waited ? rtt - waited : 0;
  if (ShedGate* gate = shed.gate()) gate->sample(now, rtt, attempt_inflight, dropped);
  attempt_start_us = 0;
}

void Exchange::on_pending_timeout() {
  queued = false;
  resume_admission(Verdict::reject(Reason::pending_overflow,
                                   "no upstream capacity freed up within pending_timeout"));
}

void Exchange::on_rate_decision(bool ok, const RateDecision& decision) {
  // Only the rate-limit stage asks Redis.
  auto* stage = static_cast<RateLimitStage*>(waiting_stage);
  resume_admission(stage->decided(*this, ok, decision));
}

}  // namespace bulwark
