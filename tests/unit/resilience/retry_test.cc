#include "resilience/retry.h"

#include <doctest/doctest.h>

#include <random>

using namespace bulwark;

namespace {
RetryConfig retry_config() {
  RetryConfig c;
  c.attempts = 3;
  c.on = {"connect-failure", "reset", "gateway-error", "429", "418"};
  c.backoff_base_ms = 25;
  c.backoff_max_ms = 250;
  return c;
}
}  // namespace

TEST_CASE("full-jitter back-off stays within [0, min(max, base * 2^(n-1))]") {
  RetryPolicy p(retry_config());
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::uint64_t caps[] = {25, 50, 100, 200, 250, 250, 250};
  for (int retry = 1; retry <= 7; ++retry) {
    std::uint64_t lo = ~0ull, hi = 0;
    for (int i = 0; i < 2000; ++i) {
      std::uint64_t b = p.backoff_ms(retry, u(rng));
      lo = std::min(lo, b);
      hi = std::max(hi, b);
    }
    CAPTURE(retry);
    CHECK(hi <= caps[retry - 1]);
    CHECK(hi >= caps[retry - 1] * 9 / 10);  // the range is used up to its cap
    CHECK(lo <= caps[retry - 1] / 10);      // ... and down to near zero (full jitter)
  }
  CHECK(p.backoff_ms(1, 0.0) == 0);
  CHECK(p.backoff_ms(1, 0.999999) == 25);
}

TEST_CASE("which outcomes are retried") {
  RetryPolicy p(retry_config());
  CHECK(p.retries(RetryOn::connect_failure));
  CHECK(p.retries(RetryOn::reset));
  CHECK_FALSE(p.retries(RetryOn::timeout));
  for (int s : {502, 503, 504, 429, 418}) CHECK(p.retries_status(s));
  for (int s : {500, 501, 200, 404, 505}) CHECK_FALSE(p.retries_status(s));
  RetryConfig all = retry_config();
  all.on = {"5xx", "timeout"};
  RetryPolicy q(all);
  CHECK(q.retries_status(500));
  CHECK(q.retries_status(599));
  CHECK_FALSE(q.retries_status(429));
  CHECK(q.retries(RetryOn::timeout));
  CHECK_FALSE(q.retries(RetryOn::reset));
}

TEST_CASE("only idempotent methods are retried unless methods: all") {
  RetryPolicy p(retry_config());
  for (const char* m : {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
    CHECK(p.method_allowed(m));
  for (const char* m : {"POST", "PATCH", "CONNECT"}) CHECK_FALSE(p.method_allowed(m));
  RetryConfig c = retry_config();
  c.methods = "all";
  CHECK(RetryPolicy(c).method_allowed("POST"));
}

TEST_CASE("deadline clipping") {
  CHECK(retry_fits(100, 0, 101, 250));
  CHECK_FALSE(retry_fits(100, 0, 100, 250));     // the back-off would reach the deadline
  CHECK_FALSE(retry_fits(10, 2000, 1500, 250));  // Retry-After longer than the time left
  CHECK(retry_fits(10, 1000, 1500, 250));        // within the time left: waited out
}

TEST_CASE("without a route timeout, Retry-After is trusted up to backoff.max") {
  CHECK(retry_fits(10, 0, kNoDeadline, 250));
  CHECK(retry_fits(10, 250, kNoDeadline, 250));
  CHECK_FALSE(retry_fits(10, 1000, kNoDeadline, 250));
  CHECK(retry_fits(10, 1000, kNoDeadline, 2000));
  const std::uint64_t years = 999999999ull * 1000;  // the longest Retry-After parsed
  CHECK_FALSE(retry_fits(10, years, kNoDeadline, 2000));
}

TEST_CASE("deadline clipping of attempts") {
  CHECK(attempt_timeout_ms(2000, 500) == 500);  // per-try cut to the time left
  CHECK(attempt_timeout_ms(200, 500) == 200);
  CHECK(attempt_timeout_ms(0, 500) == 0);
}

TEST_CASE("retry budget: ratio of recent requests plus a floor per second, over a sliding window") {
  RetryBudget budget(0.2, 1.0, 10000);  // 20 %, 1 retry/s floor (10 per 10 s window)
  std::uint64_t t = 1000000;
  budget.record_request(t - 10000);  // the budget has seen traffic for a whole window
  t += 100;
  for (int i = 0; i < 99; ++i) budget.record_request(t);
  int granted = 0;
  while (budget.try_retry(t)) ++granted;
  CHECK(granted == 20);  // this second's share: 0.2 * 99 + 1 (the window would allow 29)
  CHECK(budget.retries_in_window(t) == 20);
  // A second later, with no new requests: only the floor.
  granted = 0;
  while (budget.try_retry(t + 1000)) ++granted;
  CHECK(granted == 1);
  // More requests deposit more.
  for (int i = 0; i < 50; ++i) budget.record_request(t + 1500);
  granted = 0;
  while (budget.try_retry(t + 1500)) ++granted;
  CHECK(granted == 10);  // 0.2 * 50 + 1, less the retry of the last second
  // Ten seconds later the window has slid past all of it.
  t += 11500;
  CHECK(budget.requests_in_window(t) == 0);
  granted = 0;
  while (budget.try_retry(t)) ++granted;
  CHECK(granted == 1);  // only the floor, one second's worth
}

TEST_CASE("retry budget: a quiet window's allowance does not go out at once") {
  // 100 requests/s for 10 s, none failing; then the upstream fails everything. The window
  // holds 0.2 * 1000 + 10 * 10 = 300 retries, but the first second of the outage may only
  // spend what that second's traffic allows.
  RetryBudget budget(0.2, 10.0, 10000);
  std::uint64_t t = 3000000;
  for (std::uint64_t ms = 0; ms < 10000; ms += 10) budget.record_request(t + ms);
  t += 10000;
  for (int second = 0; second < 5; ++second) {
    CAPTURE(second);
    std::uint64_t begin = t + static_cast<std::uint64_t>(second) * 1000;
    int granted = 0;
    // Every request of the second fails and wants as many retries as it can get.
    for (std::uint64_t ms = 0; ms < 1000; ms += 10) {
      budget.record_request(begin + ms);
      while (budget.try_retry(begin + ms)) ++granted;
    }
    CHECK(granted <= 30);  // 0.2 * 100 + 10
    CHECK(granted >= 25);
  }
}

TEST_CASE("retry budget: the floor accrues from the first request") {
  RetryBudget budget(0.0, 10.0, 10000);
  std::uint64_t t = 7000000;
  budget.record_request(t);
  int granted = 0;
  CHECK(budget.try_retry(t));  // a second's worth of floor from the start
  for (int i = 1; i < 10; ++i) CHECK(budget.try_retry(t));
  CHECK_FALSE(budget.try_retry(t));
  while (budget.try_retry(t + 2000)) ++granted;
  CHECK(granted == 10);  // 10/s for the 2 s seen so far, not a whole window at once
}

TEST_CASE(
    "retry budget: under a full outage attempts stay within (1 + ratio) x requests + floor x "
    "seconds") {
  RetryBudget budget(0.2, 10.0, 10000);
  std::uint64_t attempts = 0, requests = 0;
  // 200 requests/s for 10 s, each wanting 2 retries.
  for (std::uint64_t ms = 0; ms < 10000; ms += 5) {
    std::uint64_t now = 5000000 + ms;
    budget.record_request(now);
    ++requests;
    ++attempts;
    for (int r = 0; r < 2 && budget.try_retry(now); ++r) ++attempts;
  }
  CHECK(requests == 2000);
  CHECK(attempts <= static_cast<std::uint64_t>(1.2 * 2000 + 10 * 10));
  CHECK(attempts > 2000);
}

TEST_CASE("gRPC statuses named in on: are retried, and only those") {
  RetryConfig c = retry_config();
  c.on = {"unavailable", "resource-exhausted"};
  RetryPolicy p(c);
  CHECK(p.retries_grpc(14));
  CHECK(p.retries_grpc(8));
  for (int g : {0, 1, 2, 4, 13, 3}) CHECK_FALSE(p.retries_grpc(g));
  // A gRPC name says nothing about HTTP statuses.
  CHECK_FALSE(p.retries_status(503));
  RetryPolicy none(retry_config());
  CHECK_FALSE(none.retries_grpc(14));
}
