#include "resilience/retry.h"

#include <algorithm>
#include <charconv>

#include "http/grpc.h"

namespace bulwark {

bool is_idempotent_method(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "TRACE" || m == "PUT" || m == "DELETE";
}

RetryPolicy::RetryPolicy(const RetryConfig& config) : config_(config) {
  for (const auto& kind : config.on) {
    if (kind == "connect-failure")
      on_connect_failure_ = true;
    else if (kind == "reset")
      on_reset_ = true;
    else if (kind == "timeout")
      on_timeout_ = true;
    else if (kind == "gateway-error")
      on_gateway_error_ = true;
    else if (kind == "5xx")
      on_5xx_ = true;
    else if (int g = grpc_retry_index(kind); g >= 0)
      grpc_statuses_.push_back(kGrpcRetryCodes[g]);
    else {
      int code = 0;
      std::from_chars(kind.data(), kind.data() + kind.size(), code);
      if (code) statuses_.push_back(code);  // "429" and explicit codes
    }
  }
}

bool RetryPolicy::retries(RetryOn kind) const {
  switch (kind) {
    case RetryOn::connect_failure:
      return on_connect_failure_;
    case RetryOn::reset:
      return on_reset_;
    case RetryOn::timeout:
      return on_timeout_;
  }
  return false;
}

bool RetryPolicy::retries_status(int status) const {
  if (on_5xx_ && status >= 500 && status <= 599) return true;
  if (on_gateway_error_ && (status == 502 || status == 503 || status == 504)) return true;
  return std::find(statuses_.begin(), statuses_.end(), status) != statuses_.end();
}

bool RetryPolicy::retries_grpc(int grpc_status) const {
  return std::find(grpc_statuses_.begin(), grpc_statuses_.end(), grpc_status) !=
         grpc_statuses_.end();
}

bool RetryPolicy::method_allowed(std::string_view method) const {
  return config_.methods == "all" || is_idempotent_method(method);
}

std::uint64_t RetryPolicy::backoff_ms(int retry, double random01) const {
  std::uint64_t cap = config_.backoff_base_ms;
  for (int i = 1; i < retry && cap < config_.backoff_max_ms; ++i) cap *= 2;
  cap = std::min(cap, config_.backoff_max_ms);
  auto drawn = static_cast<std::uint64_t>(random01 * static_cast<double>(cap + 1));
  return std::min(drawn, cap);
}

RetryBudget::RetryBudget(double ratio, double min_per_second, std::uint64_t window_ms)
    : ratio_(ratio),
      min_per_second_(min_per_second),
      bucket_ms_(std::max<std::uint64_t>(1, window_ms / kBuckets)),
      second_buckets_(std::clamp<std::uint64_t>(1000 / bucket_ms_, 1, kBuckets)) {}

RetryBudget::Bucket& RetryBudget::bucket(std::uint64_t now_ms) {
  std::uint64_t epoch = now_ms / bucket_ms_;
  Bucket& b = buckets_[epoch % kBuckets];
  std::uint64_t seen = b.epoch.load(std::memory_order_acquire);
  if (seen != epoch && b.epoch.compare_exchange_strong(seen, epoch, std::memory_order_acq_rel)) {
    // This thread moved the bucket to the new second: clear what the old one counted.
    b.requests.store(0, std::memory_order_relaxed);
    b.retries.store(0, std::memory_order_relaxed);
  }
  return b;
}

std::uint64_t RetryBudget::sum(std::uint64_t now_ms, bool retries, std::uint64_t span) const {
  std::uint64_t epoch = now_ms / bucket_ms_;
  std::uint64_t total = 0;
  for (const Bucket& b : buckets_) {
    std::uint64_t e = b.epoch.load(std::memory_order_acquire);
    if (e == ~0ull || e > epoch || epoch - e >= span) continue;
    total += (retries ? b.retries : b.requests).load(std::memory_order_relaxed);
  }
  return total;
}

std::uint64_t RetryBudget::requests_in_window(std::uint64_t now_ms) const {
  return sum(now_ms, false);
}
std::uint64_t RetryBudget::retries_in_window(std::uint64_t now_ms) const {
  return sum(now_ms, true);
}

void RetryBudget::record_request(std::uint64_t now_ms) {
  if (start_ms_.load(std::memory_order_relaxed) == ~0ull) {
    std::uint64_t expected = ~0ull;
    start_ms_.compare_exchange_strong(expected, now_ms, std::memory_order_acq_rel);
  }
  bucket(now_ms).requests.fetch_add(1, std::memory_order_relaxed);
}

bool RetryBudget::try_retry(std::uint64_t now_ms) {
  std::uint64_t window_ms = bucket_ms_ * kBuckets;
  std::uint64_t start = start_ms_.load(std::memory_order_acquire);
  // One second of floor is there from the start, so a fresh proxy can retry at once.
  std::uint64_t covered = start == ~0ull || now_ms < start ? 0 : now_ms - start;
  covered = std::min(window_ms, std::max<std::uint64_t>(covered, 1000));
  double allowed = ratio_ * static_cast<double>(requests_in_window(now_ms)) +
                   min_per_second_ * static_cast<double>(covered) / 1000.0;
  Bucket& b = bucket(now_ms);
  if (static_cast<double>(retries_in_window(now_ms)) + 1 > allowed) return false;
  // The burst cap: what the last second's own traffic allows.
  double allowed_now =
      ratio_ * static_cast<double>(sum(now_ms, false, second_buckets_)) + min_per_second_;
  if (static_cast<double>(sum(now_ms, true, second_buckets_)) + 1 > allowed_now) return false;
  b.retries.fetch_add(1, std::memory_order_relaxed);
  return true;
}

}  // namespace bulwark
