// Active health checking. One HealthChecker on the main thread's loop probes every endpoint
// of every upstream with a health_check block, each on its own jittered timer, over its own
// connections (never pooled ones), and publishes the result in EndpointState::health, an
// atomic the workers read when they pick an endpoint: no lock on the request path.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "config/config.h"
#include "upstream/upstream_state.h"

namespace bulwark {

// Consecutive-result thresholds. An endpoint starts `unknown` (routable, so a restart does not
// black-hole traffic); one success makes it healthy; `unhealthy_threshold` failures in a row
// make it unhealthy; from there `healthy_threshold` successes in a row bring it back.
class HealthTracker {
 public:
  HealthTracker(int healthy_threshold, int unhealthy_threshold)
      : healthy_threshold_(healthy_threshold), unhealthy_threshold_(unhealthy_threshold) {}
  // Returns true when the state changed.
  bool record(bool success);
  EndpointHealth state() const { return state_; }

 private:
  int healthy_threshold_;
  int unhealthy_threshold_;
  EndpointHealth state_ = EndpointHealth::unknown;
  int successes_ = 0;
  int failures_ = 0;
};

// interval x (1 +/- jitter), with `random01` in [0, 1).
std::uint64_t jittered_interval(std::uint64_t interval_ms, double jitter, double random01);
bool status_expected(const HealthCheckConfig& config, int status);

class HealthChecker {
 public:
  HealthChecker(uv_loop_t* loop, std::vector<UpstreamState*> upstreams);
  ~HealthChecker();
  // Probes the current endpoint lists: new endpoints start at once, removed ones stop.
  void sync();
  // The upstreams to probe from now on (a reload); sync() follows.
  void set_upstreams(std::vector<UpstreamState*> upstreams) { upstreams_ = std::move(upstreams); }
  void close();
  // Whether `endpoint` is being probed (tests, /status).
  bool probing(const EndpointState* endpoint) const;
  std::size_t probes() const { return probes_.size(); }

  struct Probe;

 private:
  uv_loop_t* loop_;
  std::vector<UpstreamState*> upstreams_;
  std::vector<std::unique_ptr<Probe>> probes_;
  std::mt19937_64 rng_;
  bool closed_ = false;
  friend struct Probe;
};

}  // namespace bulwark
