// One resolved address of an upstream, shared by every worker. Counters are kept in one
// slot per worker (each worker writes only its own), so the hot path needs no atomics with
// read-modify-write and no locks; the admin thread sums the slots.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "admin/stats.h"
#include "config/config.h"
#include "net/address.h"
#include "resilience/circuit_breaker.h"

namespace bulwark {

enum class EndpointHealth : int { unknown = 0, healthy = 1, unhealthy = 2 };
// "unknown", "healthy", "unhealthy": as logs, /status and /status/history spell it.
constexpr const char* health_name(EndpointHealth h) {
  switch (h) {
    case EndpointHealth::healthy:
      return "healthy";
    case EndpointHealth::unhealthy:
      return "unhealthy";
    default:
      return "unknown";
  }
}
enum class HealthResult { success = 0, failure = 1, timeout = 2 };

struct EndpointState {
  EndpointState(const Address& addr, const UpstreamConfig& upstream, int workers,
                std::string host = {});
  const Address address;
  const std::string name;  // "ip:port", the `endpoint` label
  // The host of the config endpoint it came from (a DNS name, or the IP address as written):
  // the TLS server name.
  const std::string host;
  std::unique_ptr<EndpointStats[]> per_worker;
  std::unique_ptr<CircuitBreaker> breaker;  // null without a circuit_breaker block
  // Written by the health checker (main thread), read by workers with a relaxed load.
  std::atomic<int> health{static_cast<int>(EndpointHealth::unknown)};
  EndpointHealth health_state() const {
    return static_cast<EndpointHealth>(health.load(std::memory_order_relaxed));
  }
  std::array<Counter, 3> health_checks;  // by HealthResult; written by the main thread only
};

using EndpointList = std::vector<std::shared_ptr<EndpointState>>;

// The endpoint list for `addresses`, reusing the states in `previous` for addresses that
// stay (so their counters and, later, breaker and health state carry over).
// `hosts[i]`: the config host `addresses[i]` came from (empty: the address itself).
EndpointList merge_endpoints(const EndpointList& previous, const std::vector<Address>& addresses,
                             const UpstreamConfig& upstream, int workers,
                             const std::vector<std::string>& hosts = {});

}  // namespace bulwark
