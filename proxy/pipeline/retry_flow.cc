// Retries of a Downstream's request: which failures are retried, the back-off, the budget,
// the per-try timeout, and replaying the request (head re-serialized, body from the replay
// copy) on another endpoint. Only while nothing of the response has reached the client.
#include <algorithm>
#include <cstdio>
#include <random>

#include "admin/stats.h"
#include "pipeline/downstream.h"
#include "worker.h"

namespace bulwark {

namespace {
double uniform01() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}
}  // namespace

std::uint64_t Downstream::time_left_ms() const {
  if (x().route_deadline_ms == 0) return kNoDeadline;
  std::uint64_t now = uv_now(worker_.loop());
  return x().route_deadline_ms > now ? x().route_deadline_ms - now : 0;
}

void Downstream::append_attempts_header(std::string& extra) const {
  if (x().attempts <= 1) return;
  extra.append("x-bulwark-attempts: ").append(std::to_string(x().attempts)).append("\r\n");
}

bool Downstream::try_retry(int reason, bool allowed_kind, std::uint64_t retry_after_ms) {
  if (!x().route_state || !x().route_state->retry || !allowed_kind) return false;
  const RetryPolicy& policy = *x().route_state->retry;
  if (x().response_started || !x().replay_enabled || x().replay_overflow || x().upgrade || done())
    return false;
  if (x().attempts >= policy.config().attempts) return false;
  std::uint64_t left = time_left_ms();
  std::uint64_t backoff = policy.backoff_ms(x().attempts, uniform01());
  // A retry never outlives the route timeout, and a server asking to wait longer than the
  // time left (or than backoff.max, without a route timeout) is not retried.
  if (!retry_fits(backoff, retry_after_ms, left, policy.config().backoff_max_ms)) return false;
  std::uint64_t now = uv_now(worker_.loop());
  if (!x().route_state->budget->try_retry(now)) {
    x().route_stats->retry_budget_exhausted.add();
    return false;
  }
  x().route_stats->retries[static_cast<std::size_t>(reason)].add();
  x().retry_pending = true;
  x().retry_delay_ms = std::max(backoff, retry_after_ms);
  return true;
}

void Downstream::schedule_retry() { arm_attempt_timer(x().retry_delay_ms); }

void Downstream::arm_attempt_timer(std::uint64_t ms) {
  uv_timer_t* t = &b().attempt_timer;
  t->data = this;
  uv_timer_start(t, on_attempt_timer, ms, 0);
}

void Downstream::on_attempt_timer(uv_timer_t* timer) {
  auto* d = static_cast<Downstream*>(timer->data);
  if (d->done()) return;
  if (d->x().discard_response && d->x().up) {
    // The body of a response being dropped for a retry took longer than per_try_timeout.
    d->x().discard_response = false;
    d->x().up->close();
    d->x().up = nullptr;
    d->x().failed_endpoint = d->x().claim.endpoint();
    d->end_attempt();
    d->schedule_retry();
  } else if (d->x().retry_pending && !d->x().up) {
    d->start_retry();
  } else if (d->x().up && !d->x().response_started) {
    d->on_per_try_timeout();
  }
}

void Downstream::start_retry() {
  x().retry_pending = false;
  if (!start_attempt()) return;  // no endpoint left: answered already
  flush();
}

void Downstream::on_per_try_timeout() {
  if (awaiting_client_body()) {
    // The upstream cannot answer a request it has not received: the client's doing.
    client_timeout("the request body did not arrive within the route's per_try_timeout");
    return;
  }
  record_upstream_outcome(static_cast<int>(UpstreamOutcome::timeout));
  x().up->close();
  x().up = nullptr;
  x().failed_endpoint = x().claim.endpoint();
  const auto& cb = x().upstream->config().circuit_breaker;
  end_attempt(breaker_result(cb && cb->on_timeout));
  const RetryPolicy* policy = x().route_state ? x().route_state->retry.get() : nullptr;
  if (try_retry(2, policy && policy->retries(RetryOn::timeout))) {
    schedule_retry();
    return;
  }
  local_reply(Reason::upstream_timeout, "the upstream did not answer within per_try_timeout");
}

bool Downstream::retry_response(const UpstreamConnection& conn) {
  const RetryPolicy* policy = x().route_state ? x().route_state->retry.get() : nullptr;
  if (!policy || !policy->retries_status(conn.status())) return false;
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
