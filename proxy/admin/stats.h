// Hot-path statistics. Each worker owns its own WorkerStats and is the only writer, so a
// count is a relaxed load+store (no lock, no atomic read-modify-write); the admin thread
// sums the workers when /metrics is scraped (StatsCollector).
#pragma once

#include <prometheus/collectable.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "config/config.h"
#include "http/local_reply.h"

namespace bulwark {

struct Counter {
  std::atomic<std::uint64_t> value{0};
  void add(std::uint64_t n = 1) {
    value.store(value.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::uint64_t get() const { return value.load(std::memory_order_relaxed); }
};

struct Gauge {
  std::atomic<std::int64_t> value{0};
  void add(std::int64_t n) {
    value.store(value.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::int64_t get() const { return value.load(std::memory_order_relaxed); }
};

inline constexpr std::array<double, 14> kDurationBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

struct DurationHistogram {
  std::array<Counter, kDurationBuckets.size() + 1> buckets;  // last: +Inf
  Counter sum_ns;
  void observe_ns(std::uint64_t ns);
};

enum class UpstreamOutcome {
  success,
  failure,
  timeout,
  reset,
  connect_failure,
  protocol_error,  // an invalid or oversized response: 502 upstream-protocol-error
  count_
};
enum class ConnectResult { success, failure, timeout, count_ };

// Retry reasons: connect-failure, reset, timeout, then one per status code 100..599.
inline constexpr int kRetryReasons = 3 + 500;
inline int retry_reason_index_for_status(int status) { return 3 + (status - 100); }

struct RouteStats {
  std::array<Counter, 500> codes;  // index: status - 100
  std::array<Counter, kRetryReasons> retries;
  Counter retry_budget_exhausted;
  std::array<Counter, 4> ratelimit;  // [scope local=0 / global=2] + [allowed=0 / limited=1]
  DurationHistogram duration;
  std::array<Counter, kReasonCount> local_replies;
  void count_status(int status) {
    if (status >= 100 && status <= 599) codes[static_cast<std::size_t>(status - 100)].add();
  }
};

struct ListenerStats {
  Gauge connections;
  // One per configured route, then one for requests that matched no route.
  std::unique_ptr<RouteStats[]> routes;
};

struct EndpointStats {
  std::array<Counter, static_cast<int>(UpstreamOutcome::count_)> outcomes;
  std::array<Counter, static_cast<int>(ConnectResult::count_)> connects;
  Gauge active;     // pooled connections carrying a request
  Gauge idle;       // pooled connections waiting for one
  Gauge in_flight;  // requests in flight to the endpoint
};

struct WorkerStats {
  explicit WorkerStats(const Config& config);
  std::vector<std::unique_ptr<ListenerStats>> listeners;
  Counter redis_errors;
};

class UpstreamState;

class StatsCollector : public prometheus::Collectable {
 public:
  StatsCollector(const Config& config, std::vector<const WorkerStats*> workers,
                 std::vector<const UpstreamState*> upstreams);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const Config& config_;
  std::vector<const WorkerStats*> workers_;
  std::vector<const UpstreamState*> upstreams_;
};

}  // namespace bulwark
