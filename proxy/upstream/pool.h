// Keep-alive connections to one endpoint, for one worker. Idle connections are reused
// most-recent-first, are watched while idle (a backend that closes one is noticed at once),
// and are closed after idle_timeout or beyond max_idle. Total connections are capped.
#pragma once

#include <uv.h>

#include <cstdint>
#include <unordered_set>

#include "admin/stats.h"
#include "config/config.h"

namespace bulwark {

class UpstreamConnection;

class ConnectionPool {
 public:
  ConnectionPool(uv_loop_t* loop, const Address& address, const UpstreamConfig& config,
                 EndpointStats& stats);
  ~ConnectionPool();

  // An idle connection, or a new one that is connecting; nullptr at max_connections.
  UpstreamConnection* acquire();
  std::size_t total() const { return total_; }
  std::size_t idle() const { return idle_count_; }
  void close_idle();
  // Closes every connection, idle or not (shutdown).
  void close_all();

  EndpointStats& stats() { return stats_; }
  const PoolConfig& config() const { return config_.pool; }

 private:
  friend class UpstreamConnection;
  // Called by connections.
  void on_idle(UpstreamConnection* conn);     // became idle (or is closed if over max_idle)
  void on_active(UpstreamConnection* conn);   // left the idle list to carry a request
  void on_closed(UpstreamConnection* conn, bool was_idle);

  void unlink_idle(UpstreamConnection* conn);

  uv_loop_t* loop_;
  Address address_;
  const UpstreamConfig& config_;
  EndpointStats& stats_;
  UpstreamConnection* idle_head_ = nullptr;  // most recently used first
  std::size_t idle_count_ = 0;
  std::size_t total_ = 0;
  std::unordered_set<UpstreamConnection*> all_;
};

}  // namespace bulwark
