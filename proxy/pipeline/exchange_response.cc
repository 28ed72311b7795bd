// An Exchange's response side: the upstream connection's events (interim responses, the
// response head re-serialized for the client, the body re-framed, trailers, the 101 tunnel),
// and upstream failures turned into a stale-connection replay, a retry or a local reply.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "admin/stats.h"
#include "core/log.h"
#include "pipeline/downstream.h"
#include "pipeline/exchange.h"
#include "worker.h"

namespace bulwark {

void Exchange::on_upstream_connected() {
  send_continue();
  client.flush();
}

void Exchange::on_upstream_interim(UpstreamStream& conn) {
  // RFC 9110 15.2: a proxy forwards 1xx responses, except those it asked for itself. Bulwark
  // answers Expect: 100-continue itself (the header is not forwarded), so a 100 from the
  // upstream after Bulwark's own is not sent twice.
  if (client.done()) return;
  if (conn.status() == 100) {
    if (sent_continue) return;
    sent_continue = true;
  }
  client.send_interim(conn);
}

void Exchange::on_upstream_headers(UpstreamStream& conn) {
  status = conn.status();
  if (status >= 200 && retry_response(conn)) {
    discard_response = true;  // read and drop the body, then retry
    return;
  }
  // The response starts: no retry from here on, and the replay copy is not needed.
  if (client.has_buffers()) uv_timer_stop(&client.b().per_try_timer);
  replay_enabled = false;
  client.b().replay.clear();
  std::string_view upgrade_token;
  if (status == 101) {
    if (!upgrade) return;  // unsolicited 101: handled as an error at completion
    upgrade_token = conn.headers().get("upgrade");
  }
  upstream_chunked = conn.body_chunked();
  char extra[160];
  std::size_t extra_len = 0;
  if (attempts > 1) {
    int n = std::snprintf(extra, sizeof extra, "x-bulwark-attempts: %d\r\n", attempts);
    extra_len = static_cast<std::size_t>(n);
  }
  if (ratelimit_header_len && extra_len + ratelimit_header_len < sizeof extra) {
    std::memcpy(extra + extra_len, ratelimit_header, ratelimit_header_len);
    extra_len += ratelimit_header_len;
  }
  client.send_response_head(conn, std::string_view(extra, extra_len), upgrade_token);
  response_started = true;
}

void Exchange::on_upstream_chunk_header(std::uint64_t size) {
  if (discard_response) return;
  response_chunk_size = size;
  client.send_response_chunk_header(size);
}

void Exchange::on_upstream_body(const char* data, std::size_t len) {
  if (discard_response) return;
  bytes_out += len;
  client.send_response_body(data, len);
}

void Exchange::on_upstream_chunk_complete() {
  if (discard_response) return;
  client.send_response_chunk_end();
}

void Exchange::on_upstream_complete() {
  if (status == 101) {
    if (!upgrade) {
      record_upstream_outcome(static_cast<int>(UpstreamOutcome::protocol_error));
      upstream_failed(Reason::upstream_protocol_error, UpstreamError::protocol,
                      "the upstream switched protocols (101) for a request without Upgrade");
      return;
    }
    record_upstream_outcome(static_cast<int>(UpstreamOutcome::success));
    report_breaker(CallResult::success);
    shed_sample(false);
    shed.release();  // a tunnel may stay open for hours: it does not hold the limit
    client.set_phase(Downstream::Phase::tunnel);
    attempt.conn->start_tunnel();
    client.forward_held_input();
    if (client.client_eof()) {  // a pipelined upgrade after the client's half-close: nothing to tunnel
      client.close_gracefully();
      return;
    }
    client.arm_timer(client.listener().view->config->idle_timeout_ms);
    client.flush();
    client.resume_reading();
    return;
  }
  const auto& cb = upstream->config().circuit_breaker;
  // A gRPC failure comes as HTTP 200 and a grpc-status: judged as its HTTP equivalent.
  int judged = attempt.conn ? judged_status(*attempt.conn) : status;
  if (discard_response) {
    // A retriable response, read to its end so the connection can be reused: retry now.
    discard_response = false;
    record_upstream_outcome(
        static_cast<int>(judged >= 500 ? UpstreamOutcome::failure : UpstreamOutcome::success));
    shed_sample(overload_status(judged));
    failed_endpoint = attempt.claim.endpoint();
    detach_upstream(request_complete,
                    cb && cb->counts_status(judged) ? CallResult::failure : CallResult::success);
    status = 0;
    schedule_retry();
    return;
  }
  client.end_response(attempt.conn ? &attempt.conn->trailers() : nullptr);
  record_upstream_outcome(
      static_cast<int>(judged >= 500 ? UpstreamOutcome::failure : UpstreamOutcome::success));
  shed_sample(overload_status(judged));
  if (!request_complete) client.close_after_response();
  client.flush();
  detach_upstream(request_complete,
                  cb && cb->counts_status(judged) ? CallResult::failure : CallResult::success);
  if (client.closing()) return;
  client.finish_request();
}

void Exchange::on_upstream_tunnel_data(const char* data, std::size_t len) {
  bytes_out += len;
  client.send_tunnel_data(data, len);
}

void Exchange::on_upstream_batch_end() { client.flush(); }

void Exchange::on_upstream_drained() {
  if (client.read_paused() && client.pending_input_size() < kHighWater && !request_complete)
    client.resume_reading();
  if (client.phase() == Downstream::Phase::tunnel) client.resume_reading();
}

void Exchange::on_upstream_error(UpstreamError error, std::string_view detail) {
  attempt.conn = nullptr;  // the connection is closing already
  if (error == UpstreamError::local_resources) {
    // Bulwark's own shortage: the endpoint and its breaker hear nothing of it.
    static LogThrottle throttle;
    throttle.log(LogLevel::warn, "upstream " + upstream->config().name +
                                     ": out of file descriptors; answering 503 overloaded");
    end_attempt(CallResult::cancelled);
    if (client.done()) return;
    if (response_started) {
      client.close();
      return;
    }
    int n = std::snprintf(reply_extra, sizeof reply_extra, "Retry-After: 1\r\n");
    reply_extra_len = static_cast<std::size_t>(n);
    client.local_reply(Reason::overloaded, "Bulwark is out of file descriptors");
    return;
  }
  if (client.phase() ==
      Downstream::Phase::tunnel) {  // the upstream ended the tunnel: not an upstream failure
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
    case UpstreamError::refused:
      // HTTP/2: the upstream did not process the stream (REFUSED_STREAM, or above its
      // GOAWAY's last stream): sent again on a fresh stream when it can be, never blamed.
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

bool Exchange::replays_stale_connection(UpstreamError error) const {
  bool unprocessed = (error == UpstreamError::reset && last_attempt_reused) ||
                     error == UpstreamError::refused;
  return unprocessed && !body_sent_upstream &&
         !request_has_body() && stale_retries < 3 && !response_started &&
         client.phase() != Downstream::Phase::tunnel && attempt.claim.endpoint() &&
         !client.done();
}

bool Exchange::retract_response() {
  if (!response_started) return true;
  if (response_committed || local_reply_sent) return false;
  if (!client.drop_unsent_response()) return false;
  response_started = false;
  response_framing = BodyFraming::none;
  upstream_chunked = false;
  status = 0;
  return true;
}

void Exchange::upstream_failed(Reason reason, UpstreamError error, std::string_view detail) {
  if (attempt.claim.endpoint()) failed_endpoint = attempt.claim.endpoint();
  if (attempt.conn) {
    attempt.conn->close();
    attempt.conn = nullptr;
  }
  // A kept-alive connection that the upstream closed just as we reused it: nothing was
  // processed, so the request goes again on a fresh connection to the same endpoint, which
  // is not blamed for the stale one.
  if (replays_stale_connection(error)) {
    // Same endpoint, fresh connection: if that fails too, the endpoint is to blame.
    upstream->stats(*attempt.claim.endpoint()).stale_retries.add();
    ++stale_retries;
    --attempts;
    if (UpstreamStream* conn = attempt.claim.endpoint()->pool->acquire_new(&attempt))
      use_connection(conn);
    client.flush();
    return;
  }
  shed_sample(true);
  const auto& cb = upstream->config().circuit_breaker;
  bool connect = error == UpstreamError::connect_failure || error == UpstreamError::connect_timeout;
  // An invalid response is always the endpoint's fault.
  bool counted =
      cb && client.phase() != Downstream::Phase::tunnel && error != UpstreamError::refused &&
      (error == UpstreamError::protocol || (connect ? cb->on_connect_failure : cb->on_reset));
  end_attempt(breaker_result(counted));
  if (client.done()) return;
  if (discard_response) {  // the retry was decided when the response head arrived
    discard_response = false;
    schedule_retry();
    return;
  }
  if (client.phase() == Downstream::Phase::tunnel) {
    client.close_gracefully();
    return;
  }
  if (!retract_response()) {
    client.close();  // part of the response went out: a broken connection is the only honest signal
    return;
  }
  const RetryPolicy* policy = route_state ? route_state->retry.get() : nullptr;
  // An invalid response is retried as a reset is: the connection's answer is unusable.
  // A refused stream was not processed: any retry policy may send it again.
  bool retriable = policy && (error == UpstreamError::refused ||
                              policy->retries(connect ? RetryOn::connect_failure : RetryOn::reset));
  if (try_retry(connect ? 0 : 1, retriable)) {
    schedule_retry();
    return;
  }
  switch (reason) {
    case Reason::upstream_connect_failure:
      client.local_reply(reason, "could not connect to the upstream");
      break;
    case Reason::upstream_protocol_error:
      client.local_reply(reason, detail.empty() ? "the upstream sent an invalid response" : detail);
      break;
    default:
      client.local_reply(reason, "the upstream closed the connection before responding");
      break;
  }
}

}  // namespace bulwark
