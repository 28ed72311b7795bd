// An upstream as one worker sees it: its endpoints, a connection pool per endpoint, and the
// balancer that picks among them.
#pragma once

#include <uv.h>

#include <memory>
#include <vector>

#include "admin/stats.h"
#include "config/config.h"
#include "upstream/balancer.h"
#include "upstream/pool.h"

namespace bulwark {

class Upstream {
 public:
  Upstream(uv_loop_t* loop, const UpstreamConfig& config, UpstreamStats& stats,
           std::uint64_t seed);

  const UpstreamConfig& config() const { return config_; }
  std::size_t endpoint_count() const { return pools_.size(); }
  // Chooses the endpoint for the next attempt.
  std::size_t pick();
  ConnectionPool& pool(std::size_t endpoint) { return *pools_[endpoint]; }
  EndpointStats& endpoint_stats(std::size_t endpoint) { return stats_.endpoints[endpoint]; }
  const std::string& endpoint_name(std::size_t endpoint) const { return names_[endpoint]; }
  // In-flight bookkeeping (drives least_request).
  void begin_request(std::size_t endpoint);
  void end_request(std::size_t endpoint);
  void close_all();

 private:
  const UpstreamConfig& config_;
  UpstreamStats& stats_;
  std::vector<std::unique_ptr<ConnectionPool>> pools_;
  std::vector<std::int64_t> in_flight_;
  std::vector<std::string> names_;
  Balancer balancer_;
};

}  // namespace bulwark
