// Hot-path statistics. Each worker owns its own WorkerStats and is the only writer, so a
// count is a relaxed load+store (no lock, no atomic read-modify-write); the admin thread
// sums the workers when /metrics is scraped (StatsCollector).
#pragma once

#include <prometheus/collectable.h>

#include <array>
#include <map>
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

// Retry reasons: connect-failure, reset, timeout, one per status code 100..599, then the gRPC
// statuses a policy may name (http/grpc.h, kGrpcRetryCodes order).
inline constexpr int kRetryReasons = 3 + 500 + 5;
inline int retry_reason_index_for_status(int status) { return 3 + (status - 100); }
inline int retry_reason_index_for_grpc(int index) { return 3 + 500 + index; }

// bulwark_ratelimit_decisions_total{decision}: limited_redis_failure is a refusal because Redis
// could not be asked (on_redis_failure: deny), kept apart from quota breaches.
enum class RateLimitDecision { allowed, limited, limited_redis_failure, count_ };
inline constexpr const char* kRateLimitDecisionNames[] = {"allowed", "limited",
                                                          "limited_redis_failure"};
inline constexpr std::size_t kRateLimitDecisions =
    static_cast<std::size_t>(RateLimitDecision::count_);
inline std::size_t ratelimit_index(bool global, RateLimitDecision d) {
  return (global ? kRateLimitDecisions : 0) + static_cast<std::size_t>(d);
}

struct RouteStats {
  std::array<Counter, 500> codes;  // index: status - 100
  std::array<Counter, kRetryReasons> retries;
  Counter retry_budget_exhausted;
  std::array<Counter, 2 * kRateLimitDecisions> ratelimit;  // by ratelimit_index()
  DurationHistogram duration;
  std::array<Counter, kReasonCount> local_replies;
  std::array<Counter, 2> faults;  // injected: [delay, abort]
  void count_status(int status) {
    if (status >= 100 && status <= 599) codes[static_cast<std::size_t>(status - 100)].add();
  }
};

// Why an incoming connection was closed without being served.
enum class AcceptRefusal { fd_limit, max_connections, count_ };

// Why Bulwark ended an HTTP/2 connection (bulwark_http2_protocol_errors_total{reason}).
enum class H2Error {
  rapid_reset,            // streams opened and reset faster than the allowed rate
  continuation_flood,     // a header block split over too many CONTINUATION frames
  header_list_too_large,  // a decoded header list past limits.max_header_bytes/max_headers
  too_many_streams,       // opened streams past SETTINGS_MAX_CONCURRENT_STREAMS
  settings_flood,         // SETTINGS frames faster than their ACKs could be sent
  ping_flood,             // PING frames faster than their ACKs could be sent
  window_stall,           // response data waited on a closed flow-control window too long
  protocol_error,         // any other violation of RFC 9113 (or an unfinished header block)
  count_
};
inline constexpr int kH2ErrorCount = static_cast<int>(H2Error::count_);
const char* h2_error_name(H2Error e);  // the metric label

// A listener's counters on one worker (its routes' are kept apart, by route name).
struct ListenerStats {
  Gauge connections;
  std::array<Counter, 2> tls_handshakes;  // TLS listeners: [success, failure]
  std::array<Counter, static_cast<int>(AcceptRefusal::count_)> accepts_refused;
  Gauge h2_connections;             // client connections speaking HTTP/2
  Gauge h2_streams;                 // open HTTP/2 streams
  std::array<Counter, kH2ErrorCount> h2_errors;  // HTTP/2 connections ended, by H2Error
  RouteStats unmatched;  // requests that matched no route
};

struct EndpointStats {
  std::array<Counter, static_cast<int>(UpstreamOutcome::count_)> outcomes;
  std::array<Counter, static_cast<int>(ConnectResult::count_)> connects;
  // Requests replayed because a pooled connection was found closed.
  Counter stale_retries;
  std::array<Counter, 2> tls_handshakes;  // TLS to the endpoint: [success, failure]
  Gauge active;     // pooled connections carrying a request
  Gauge idle;       // pooled connections waiting for one
  Gauge in_flight;  // requests in flight to the endpoint
  // protocol: h2 upstreams.
  Gauge h2_streams;                              // open HTTP/2 streams to the endpoint
  std::array<Counter, kH2ErrorCount> h2_errors;  // connections ended by an HTTP/2 error
};

// One Redis server as one worker saw it (written by the worker's RedisNode, read by the
// admin thread): the address is set once, before `published`, and never changes.
struct RedisNodeStats {
  std::string address;
  std::atomic<bool> published{false};
  Gauge usable;                // 1 while the worker can send to it
  Counter errors;              // errors, timeouts, lost connections, refused AUTH
  DurationHistogram latency;   // decisions answered, send to reply
};

// A worker's counters that are not a listener's or a route's (those: see Generation).
struct WorkerStats {
  static constexpr std::size_t kRedisNodes = 64;  // beyond: the last slot counts for all
  Counter redis_errors;
  std::array<RedisNodeStats, kRedisNodes> redis_nodes;
  std::atomic<std::size_t> redis_node_count{0};
  Gauge redis_replicas;  // the replica count the worker's limiter uses (0: no Redis)
  // The slot of `address` (the worker's thread only): found, or claimed.
  RedisNodeStats& redis_node(const std::string& address);
};

// Each Redis server as all workers see it: workers that can send to it, errors, latencies.
struct RedisNodeTotals {
  std::int64_t up = 0;
  std::uint64_t errors = 0;
  std::vector<const DurationHistogram*> latency;
};
std::map<std::string, RedisNodeTotals> redis_node_totals(const std::vector<const WorkerStats*>& workers);

class AccessLogSink;

// Counters kept outside the workers: the main thread's (DNS, admin) and the access log's.
struct ProcessStats {
  Counter admin_connections_refused;          // over the admin connection limit
  const AccessLogSink* access_log = nullptr;  // its dropped lines
  std::array<Counter, 2> reloads;             // bulwark_config_reloads_total: [success, failure]
  Gauge last_reload_failed;                   // 1 after a refused reload, 0 after a good one
};

struct Generation;

class StatsCollector : public prometheus::Collectable {
 public:
  // `generation`: the configuration in effect and its counters; replaced by a reload
  // (set_generation, on the thread that calls Collect).
  StatsCollector(std::shared_ptr<const Generation> generation,
                 std::vector<const WorkerStats*> workers, const ProcessStats& process);
  void set_generation(std::shared_ptr<const Generation> generation) {
    generation_ = std::move(generation);
  }
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::shared_ptr<const Generation> generation_;
  std::vector<const WorkerStats*> workers_;
  const ProcessStats& process_;
};

}  // namespace bulwark
