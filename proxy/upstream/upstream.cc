#include "upstream/upstream.h"

namespace bulwark {

Upstream::Upstream(uv_loop_t* loop, const UpstreamConfig& config, UpstreamStats& stats,
                   std::uint64_t seed)
    : config_(config), stats_(stats), balancer_(Balancer::parse(config.balance), seed) {
  for (std::size_t i = 0; i < config.endpoints.size(); ++i) {
    pools_.push_back(std::make_unique<ConnectionPool>(loop, config.endpoints[i].address, config,
                                                      stats.endpoints[i]));
    names_.push_back(config.endpoints[i].address.to_string());
  }
  in_flight_.assign(pools_.size(), 0);
}

std::size_t Upstream::pick() { return balancer_.pick(in_flight_); }

void Upstream::begin_request(std::size_t endpoint) {
  ++in_flight_[endpoint];
  stats_.endpoints[endpoint].in_flight.add(1);
}

void Upstream::end_request(std::size_t endpoint) {
  --in_flight_[endpoint];
  stats_.endpoints[endpoint].in_flight.add(-1);
}

void Upstream::close_all() {
  for (auto& p : pools_) p->close_all();
}

}  // namespace bulwark
