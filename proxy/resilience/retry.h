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
};

bool is_idempotent_method(std::string_view method);

// Retries allowed in a sliding window: ratio x requests + min_per_second x window seconds.
// One-second buckets of atomic counters, shared by every worker.
class RetryBudget {
 public:
  RetryBudget(double ratio, double min_per_second, std::uint64_t window_ms = 10000);
  void record_request(std::uint64_t now_ms);
  // Takes one retry from the budget; false when it is exhausted.
  bool try_retry(std::uint64_t now_ms);
  std::uint64_t requests_in_window(std::uint64_t now_ms) const;
  std::uint64_t retries_in_window(std::uint64_t now_ms) const;

 private:
  static constexpr int kBuckets = 10;
  struct Bucket {
    std::atomic<std::uint64_t> epoch{~0ull};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> retries{0};
  };
  Bucket& bucket(std::uint64_t now_ms);
  std::uint64_t sum(std::uint64_t now_ms, bool retries) const;

  const double ratio_;
  const double min_per_second_;
  const std::uint64_t bucket_ms_;
  Bucket buckets_[kBuckets];
};

}  // namespace bulwark
