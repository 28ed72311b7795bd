// The process-wide part of an upstream: its current endpoint list (replaced as a whole when
// DNS answers change, read by workers only when told it changed) and the bulkhead counters
// that every worker shares (atomics: the limits hold for the process, not per worker).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

#include "admin/stats.h"
#include "config/config.h"
#include "net/tls.h"
#include "resilience/load_shedder.h"
#include "upstream/endpoint.h"

namespace bulwark {

// Panic routing (Envoy's healthy_panic_threshold). `max_ejected`: more than max_ejected of the
// endpoints are ejected (by health checks or open breakers), but not all: every endpoint takes
// traffic again. `all_ejected`: every endpoint is ejected and `health_only` of them only by
// health checks: those take the traffic (open breakers still fail fast).
enum class PanicMode : int { none = 0, max_ejected = 1, all_ejected = 2 };
PanicMode panic_mode(std::size_t total, std::size_t ejected, std::size_t health_only,
                     double max_ejected);

class UpstreamState {
 public:
  UpstreamState(const UpstreamConfig& config, int workers);

  const UpstreamConfig& config() const { return config_; }
  int workers() const { return workers_; }

  std::shared_ptr<const EndpointList> endpoints() const;
  // Publishes a new list and calls the change hook (which tells the workers).
  void set_endpoints(EndpointList list);
  void set_change_hook(std::function<void()> hook) { on_change_ = std::move(hook); }
  // An endpoint became unhealthy (called on the main thread by the health checker).
  void notify_health_change() {
    if (on_health_change_) on_health_change_();
  }
  void set_health_hook(std::function<void()> hook) { on_health_change_ = std::move(hook); }

  // Bulkhead: at most max_requests admitted at once in the whole process.
  bool try_admit();
  void release();
  // Pending: a request waiting for admission; false when max_pending are waiting already.
  bool try_enqueue();
  void dequeue();
  // Panic mode as the workers last saw it; a change is logged once for the process.
  PanicMode panic() const { return static_cast<PanicMode>(panic_.load(std::memory_order_relaxed)); }
  void set_panic(PanicMode mode);
  // Attempts routed while in panic mode (bulwark_panic_routed_total).
  void count_panic_routed() { panic_routed_.fetch_add(1, std::memory_order_relaxed); }
  std::uint64_t panic_routed() const { return panic_routed_.load(std::memory_order_relaxed); }

  // bulwark_dns_lookups_total of this upstream's refreshes: [success, failure].
  std::array<Counter, 2>& dns_lookups() { return dns_lookups_; }
  const std::array<Counter, 2>& dns_lookups() const { return dns_lookups_; }

  // TLS to the endpoints (made by the loader): null without a tls block.
  const TlsClientContext* tls() const {
    return config_.tls ? config_.tls->context.get() : nullptr;
  }
  // Adaptive load shedding (null when the upstream has no load_shedding block).
  LoadShedder* shedder() const { return shedder_.get(); }

  std::int64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  std::int64_t pending() const { return pending_.load(); }  // seq_cst: see try_admit()

 private:
  // A copy: the state outlives the config it was made from when a reload keeps it.
  const UpstreamConfig config_;
  const int workers_;
  mutable std::mutex
      endpoints_mutex_;  // taken on publish and on a worker's refresh, never per request
  std::shared_ptr<const EndpointList> endpoints_;
  std::function<void()> on_change_;
  std::function<void()> on_health_change_;
  std::atomic<std::int64_t> in_flight_{0};
  std::atomic<std::int64_t> pending_{0};
  std::atomic<int> panic_{0};
  std::atomic<std::uint64_t> panic_routed_{0};
  std::unique_ptr<LoadShedder> shedder_;
  std::array<Counter, 2> dns_lookups_;
};

}  // namespace bulwark
