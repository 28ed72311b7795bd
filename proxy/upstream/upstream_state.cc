#include "upstream/upstream_state.h"

#include <uv.h>

#include "core/log.h"

namespace bulwark {

EndpointState::EndpointState(const Address& addr, const UpstreamConfig& upstream, int workers)
    : address(addr), name(addr.to_string()), per_worker(new EndpointStats[workers]) {
  if (!upstream.circuit_breaker) return;
  std::uint64_t seed = std::hash<std::string>()(name) ^ static_cast<std::uint64_t>(uv_hrtime());
  breaker = std::make_unique<CircuitBreaker>(*upstream.circuit_breaker, workers, seed);
  std::string who = "upstream " + upstream.name + " endpoint " + name + ": circuit ";
  breaker->on_transition = [who](BreakerState from, BreakerState to, std::uint64_t open_ms) {
    std::string line = who + breaker_state_name(from) + " -> " + breaker_state_name(to);
    if (to == BreakerState::open) line += " for " + std::to_string(open_ms) + "ms";
    if (to == BreakerState::open)
      log_warn(line);
    else
      log_info(line);
  };
}

EndpointList merge_endpoints(const EndpointList& previous, const std::vector<Address>& addresses,
                             const UpstreamConfig& upstream, int workers) {
  EndpointList out;
  for (const Address& a : addresses) {
    std::string name = a.to_string();
    bool seen = false;
    for (const auto& e : out) seen = seen || e->name == name;
    if (seen) continue;  // the same address from two names
    std::shared_ptr<EndpointState> state;
    for (const auto& e : previous)
      if (e->name == name) state = e;
    out.push_back(state ? state : std::make_shared<EndpointState>(a, upstream, workers));
  }
  return out;
}

UpstreamState::UpstreamState(const UpstreamConfig& config, int workers)
    : config_(config), workers_(workers), endpoints_(std::make_shared<EndpointList>()) {}

std::shared_ptr<const EndpointList> UpstreamState::endpoints() const {
  std::lock_guard<std::mutex> lock(endpoints_mutex_);
  return endpoints_;
}

void UpstreamState::set_endpoints(EndpointList list) {
  {
    std::lock_guard<std::mutex> lock(endpoints_mutex_);
    endpoints_ = std::make_shared<const EndpointList>(std::move(list));
  }
  if (on_change_) on_change_();
}

// Sequentially consistent on purpose: a worker that enqueues (pending_ up, then try_admit) and
// one that releases (in_flight_ down, then pending()) must not both miss the other's write, or
// a freed slot wakes nobody. On x86 these are the same instructions as acq_rel.
bool UpstreamState::try_admit() {
  auto max = static_cast<std::int64_t>(config_.limits.max_requests);
  if (in_flight_.fetch_add(1) < max) return true;
  in_flight_.fetch_sub(1);
  return false;
}

void UpstreamState::release() { in_flight_.fetch_sub(1); }

bool UpstreamState::try_enqueue() {
  auto max = static_cast<std::int64_t>(config_.limits.max_pending);
  if (pending_.fetch_add(1) < max) return true;
  pending_.fetch_sub(1);
  return false;
}

void UpstreamState::dequeue() { pending_.fetch_sub(1); }

}  // namespace bulwark
