// Retries of an Exchange: which failures are retried, the back-off, the budget,
// the per-try timeout, and replaying the request (head re-serialized, body from the replay
// copy) on another endpoint. Only while nothing of the response has reached the client.
#include <algorithm>
#include <cstdio>
#include <random>

#include "admin/stats.h"
#include "http/grpc.h"
#include "pipeline/downstream.h"
#include "worker.h"

namespace bulwark {

namespace {
double uniform01() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}
}  // namespace

std::uint64_t Exchange::time_left_ms() const {
  if (route_deadline_ms == 0) return kNoDeadline;
  std::uint64_t now = uv_now(client.worker().loop());
  return route_deadline_ms > now ? route_deadline_ms - now : 0;
}

void Exchange::append_attempts_header(std::string& extra) const {
  if (attempts <= 1) return;
  extra.append("x-bulwark-attempts: ").append(std::to_string(attempts)).append("\r\n");
}

bool Exchange::try_retry(int reason, bool allowed_kind, std::uint64_t retry_after_ms) {
  if (!route_state || !route_state->retry || !allowed_kind) return false;
  const RetryPolicy& policy = *route_state->retry;
  if (response_started || !replay_enabled || replay_overflow || upgrade || client.done())
    return false;
  if (attempts >= policy.config().attempts) return false;
  std::uint64_t left = time_left_ms();
  std::uint64_t backoff = policy.backoff_ms(attempts, uniform01());
  // A retry never outlives the route timeout, and a server asking to wait longer than the
  // time left (or than backoff.max, without a route timeout) is not retried.
  if (!retry_fits(backoff, retry_after_ms, left, policy.config().backoff_max_ms)) return false;
  // Under overload a retry yields its unit of the concurrency limit to first attempts (counted
  // as shed only when the retry would otherwise have gone: after the checks above).
  if (ShedGate* gate = shed.gate(); gate && !gate->retry_allowed()) {
    gate->shedder().count_shed(priority);
    return false;
  }
  std::uint64_t now = uv_now(client.worker().loop());
  if (!route_state->budget->try_retry(now)) {
    route_stats->retry_budget_exhausted.add();
    return false;
  }
  route_stats->retries[static_cast<std::size_t>(reason)].add();
  retry_pending = true;
  retry_delay_ms = std::max(backoff, retry_after_ms);
  return true;
}

void Exchange::schedule_retry() {
  uv_timer_t* t = &client.b().backoff_timer;
  t->data = this;
  uv_timer_start(t, on_backoff_timer, retry_delay_ms, 0);
}

void Exchange::on_backoff_timer(uv_timer_t* timer) {
  auto* d = static_cast<Exchange*>(timer->data);
  if (d->client.done() || !d->retry_pending || d->attempt.conn) return;
  d->start_retry();
}

void Exchange::arm_per_try_timer(std::uint64_t ms) {
  uv_timer_t* t = &client.b().per_try_timer;
  t->data = this;
  uv_timer_start(t, on_per_try_timer, ms, 0);
}

void Exchange::on_per_try_timer(uv_timer_t* timer) {
  auto* d = static_cast<Exchange*>(timer->data);
  if (d->client.done() || !d->attempt.conn) return;
  if (d->discard_response) {
    // The body of a response being dropped for a retry took longer than per_try_timeout.
    d->discard_response = false;
    d->shed_sample(true);
    d->attempt.conn->close();
    d->attempt.conn = nullptr;
    d->failed_endpoint = d->attempt.claim.endpoint();
    d->end_attempt();
    d->schedule_retry();
  } else if (!d->response_started) {
    d->on_per_try_timeout();
  }
}

void Exchange::start_retry() {
  retry_pending = false;
  if (!start_attempt()) return;  // no endpoint left: answered already
  client.flush();
}

void Exchange::on_per_try_timeout() {
  if (awaiting_client_body()) {
    // The upstream cannot answer a request it has not received: the client's doing.
    client_timeout("the request body did not arrive within the route's per_try_timeout");
    return;
  }
  record_upstream_outcome(static_cast<int>(UpstreamOutcome::timeout));
  shed_sample(true);
  attempt.conn->close();
  attempt.conn = nullptr;
  failed_endpoint = attempt.claim.endpoint();
  const auto& cb = upstream->config().circuit_breaker;
  end_attempt(breaker_result(cb && cb->on_timeout));
  const RetryPolicy* policy = route_state ? route_state->retry.get() : nullptr;
  if (try_retry(2, policy && policy->retries(RetryOn::timeout))) {
    schedule_retry();
    return;
  }
  client.local_reply(Reason::upstream_timeout,
                     "the upstream did not answer within per_try_timeout");
}

int Exchange::grpc_status_of(const UpstreamStream& conn) const {
  // Only a gRPC request's response is looked at (no header scan for other requests).
  if (conn.status() != 200 || !client.has_buffers() || !client.b().info.grpc) return -1;
  std::string_view v = conn.trailers().get("grpc-status");
  if (v.empty()) v = conn.headers().get("grpc-status");  // trailers-only over HTTP/1.1
  return v.empty() ? -1 : parse_grpc_status(v);
}

int Exchange::judged_status(const UpstreamStream& conn) const {
  int g = grpc_status_of(conn);
  return g < 0 ? status : grpc_http_status(g);
}

bool Exchange::retry_response(const UpstreamStream& conn) {
  const RetryPolicy* policy = route_state ? route_state->retry.get() : nullptr;
  if (!policy) return false;
  // A gRPC failure is retriable when its status is in the head (trailers-only): nothing of the
  // response has reached the client yet.
  if (int g = grpc_status_of(conn); g > 0 && policy->retries_grpc(g))
    return try_retry(retry_reason_index_for_grpc(grpc_retry_index_of_status(g)), true);
  if (!policy->retries_status(conn.status())) return false;
  std::uint64_t retry_after_ms = 0;
  if (conn.status() == 429 || conn.status() == 503) {
    std::string_view v = conn.headers().get("retry-after");
    std::uint64_t seconds = 0;
    bool digits =
        !v.empty() && std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits && v.size() < 10) {
      for (char c : v) seconds = seconds * 10 + static_cast<std::uint64_t>(c - '0');
      retry_after_ms = seconds * 1000;
    }
  }
  return try_retry(retry_reason_index_for_status(conn.status()), true, retry_after_ms);
}

}  // namespace bulwark
