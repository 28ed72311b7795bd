// Retry policy of a route: which failures are retried, how long to back off, and the retry
// budget that keeps retries from amplifying an outage. The budget is shared by all workers.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace bulwark {

enum class RetryOn { connect_failure, reset, timeout };

class RetryPolicy {
 public:
  explicit RetryPolicy(const RetryConfig& config);
  const RetryConfig& config() const { return config_; }
  bool retries(RetryOn kind) const;
  bool retries_status(int status) const;
  // A gRPC status named in `on:` (unavailable, resource-exhausted, ...).
  bool retries_grpc(int grpc_status) const;
  // RFC 9110 9.2.2: only idempotent methods are retried unless `methods: all`.
  bool method_allowed(std::string_view method) const;
  // Full-jitter exponential backoff before retry number `retry` (1 = first retry):
  // uniform in [0, min(max, base * 2^(retry-1))]. `random01` in [0, 1).
  std::uint64_t backoff_ms(int retry, double random01) const;

 private:
  RetryConfig config_;
  bool on_connect_failure_ = false, on_reset_ = false, on_timeout_ = false;
  bool on_gateway_error_ = false, on_5xx_ = false;
  std::vector<int> statuses_;  // 429 and explicit codes
  std::vector<int> grpc_statuses_;
};

bool is_idempotent_method(std::string_view method);

// time_left_ms() of a request whose route has no timeout.
inline constexpr std::uint64_t kNoDeadline = ~0ull;

// Deadline rules: a retry must start (after its back-off) before the route timeout, and is not
// made when the server asked (Retry-After) to wait longer than the time left, or, on a route
// without a timeout, longer than backoff.max: a Retry-After is never trusted for hours.
inline bool retry_fits(std::uint64_t backoff_ms, std::uint64_t retry_after_ms,
                       std::uint64_t left_ms, std::uint64_t backoff_max_ms) {
  if (backoff_ms >= left_ms) return false;
  if (retry_after_ms == 0) return true;
  return left_ms == kNoDeadline ? retry_after_ms <= backoff_max_ms : retry_after_ms < left_ms;
}
// The timeout of one attempt: per_try_timeout cut to the time left (0 per_try: none).
inline std::uint64_t attempt_timeout_ms(std::uint64_t per_try_ms, std::uint64_t left_ms) {
  return per_try_ms == 0 ? 0 : (per_try_ms < left_ms ? per_try_ms : left_ms);
}

// Retries allowed, with two bounds that must both hold. Over a sliding window (10 s): ratio x
// requests in the window + min_per_second x the seconds the window covers (the floor accrues
// from the first request, starting with one second's worth, so a fresh start does not grant a
// whole window's worth at once). Over the last second: ratio x requests in that second +
// min_per_second, so the allowance a quiet window built up cannot go out in one burst when an
// outage starts. Buckets of 200 ms of atomic counters, shared by every worker; "the last
// second" is the current bucket and the 4 before it. Hence, within one window, retries stay
// within ratio x requests + min_per_second x max(T, 1 s) over any span of T seconds, and within
// ratio x requests of the second + min_per_second in any one second (plus at most one
// bucket's rounding).
class RetryBudget {
 public:
  RetryBudget(double ratio, double min_per_second, std::uint64_t window_ms = 10000);
  void record_request(std::uint64_t now_ms);
  // Takes one retry from the budget; false when it is exhausted.
  bool try_retry(std::uint64_t now_ms);
  std::uint64_t requests_in_window(std::uint64_t now_ms) const;
  std::uint64_t retries_in_window(std::uint64_t now_ms) const;

 private:
  static constexpr int kBuckets = 50;
  struct Bucket {
    std::atomic<std::uint64_t> epoch{~0ull};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> retries{0};
  };
  Bucket& bucket(std::uint64_t now_ms);
  // Requests (or retries) in the `span` buckets up to the current one.
  std::uint64_t sum(std::uint64_t now_ms, bool retries, std::uint64_t span = kBuckets) const;

  const double ratio_;
  const double min_per_second_;
  const std::uint64_t bucket_ms_;
  const std::uint64_t second_buckets_;          // buckets that make up the last second
  std::atomic<std::uint64_t> start_ms_{~0ull};  // first request seen
  Bucket buckets_[kBuckets];
};

}  // namespace bulwark
