#include "upstream/upstream_state.h"

#include <uv.h>

#include "core/log.h"

namespace bulwark {

EndpointState::EndpointState(const Address& addr, const UpstreamConfig& upstream, int workers,
                             std::string host_name)
    : address(addr),
      name(addr.to_string()),
      host(host_name.empty() ? ip_string(addr.sockaddr_ptr()) : std::move(host_name)),
      per_worker(new EndpointStats[workers]) {
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
                             const UpstreamConfig& upstream, int workers,
                             const std::vector<std::string>& hosts) {
  EndpointList out;
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    const Address& a = addresses[i];
    std::string name = a.to_string();
    bool seen = false;
    for (const auto& e : out) seen = seen || e->name == name;
    if (seen) continue;  // the same address from two names
    std::shared_ptr<EndpointState> state;
    for (const auto& e : previous)
      if (e->name == name) state = e;
    out.push_back(state ? state
                        : std::make_shared<EndpointState>(
                              a, upstream, workers, i < hosts.size() ? hosts[i] : std::string()));
  }
  return out;
}

PanicMode panic_mode(std::size_t total, std::size_t ejected, std::size_t health_only,
                     double max_ejected) {
  if (total > 0 && ejected == total && health_only > 0) return PanicMode::all_ejected;
  return ejection_panics(ejected, total, max_ejected) ? PanicMode::max_ejected : PanicMode::none;
}

void UpstreamState::set_panic(PanicMode mode) {
  int previous = panic_.exchange(static_cast<int>(mode), std::memory_order_relaxed);
  if (previous == static_cast<int>(mode)) return;  // another worker logged it already
  std::string who = "upstream " + config_.name + ": ";
  switch (mode) {
    case PanicMode::all_ejected:
      log_warn(who +
               "every endpoint is ejected, some only by health checks; routing to those "
               "(panic mode)");
      break;
    case PanicMode::max_ejected:
      log_warn(who +
               "more than max_ejected of the endpoints are ejected; routing to all of "
               "them (panic mode)");
      break;
    case PanicMode::none:
      log_info(who + "enough endpoints are usable again; panic mode ends");
      break;
  }
}

UpstreamState::UpstreamState(const UpstreamConfig& config, int workers)
    : config_(config), workers_(workers), endpoints_(std::make_shared<EndpointList>()) {
  if (config_.load_shedding)
    shedder_ = std::make_unique<LoadShedder>(*config_.load_shedding, workers);
}

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
