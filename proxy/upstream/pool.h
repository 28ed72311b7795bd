// Keep-alive connections to one endpoint, for one worker. Idle connections are reused
// newest first, are watched while idle (a backend that closes one is noticed at once), and
// are closed after idle_timeout (one timer per pool) or beyond max_idle. At most `cap`
// connections are open; past that, requests wait in FIFO order for one to be released.
#pragma once

#include <uv.h>

#include <cstdint>
#include <unordered_set>

#include "admin/stats.h"
#include "config/config.h"
#include "core/intrusive_list.h"
#include "net/tls.h"
#include "upstream/idle_list.h"

namespace bulwark {

class UpstreamConnection;

// A request waiting for a connection of a full pool.
class PoolWaiter {
 public:
  virtual void on_pool_connection(UpstreamConnection* conn) = 0;
  ListHook<PoolWaiter> wait_hook;
  bool waiting() const { return wait_hook.linked; }

 protected:
  ~PoolWaiter() = default;
};

class ConnectionPool {
 public:
  // `cap`: connections this pool may open (the worker's share of pool.max_connections).
  // `tls`: the upstream's TLS context when it has a tls block (null there: the context could
  // not be made, and every connection fails); `server_name`: the endpoint's host (SNI).
  ConnectionPool(uv_loop_t* loop, const Address& address, const UpstreamConfig& config,
                 std::size_t cap, std::size_t max_idle, EndpointStats& stats,
                 const TlsClientContext* tls = nullptr, std::string server_name = {});
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // An idle connection, or a new one that is connecting. When the pool is full: nullptr,
  // and `waiter` gets a connection later (on_pool_connection) unless it cancels.
  UpstreamConnection* acquire(PoolWaiter* waiter);
  // Like acquire(), but never an idle connection: after a reused one turned out dead.
  UpstreamConnection* acquire_new(PoolWaiter* waiter);
  void cancel_wait(PoolWaiter* waiter);
  std::size_t total() const { return total_; }
  std::size_t idle() const { return idle_.size(); }
  std::size_t cap() const { return cap_; }
  void close_idle();
  // Closes every connection, idle or not, and the pool's timer (shutdown).
  void close_all();

  EndpointStats& stats() { return stats_; }
  const UpstreamConfig& config() const { return config_; }
  const Address& address() const { return address_; }
  const TlsClientContext* tls() const { return tls_; }
  const std::string& server_name() const { return server_name_; }
  // The newest TLS session a server gave a connection of this pool, to resume the next one
  // (null: none yet). The pool keeps one reference.
  SSL_SESSION* tls_session() const { return tls_session_; }
  void set_tls_session(SSL_SESSION* session);
  // Logs a failed handshake to this endpoint: at once when the reason changes, else at most
  // once every 10 s (with the number of failures since), so a broken upstream does not
  // flood the log.
  void log_tls_failure(const std::string& reason);

 private:
  friend class UpstreamConnection;
  // Called by connections.
  void on_idle(UpstreamConnection* conn);    // became idle: to a waiter, the idle list, or closed
  void on_active(UpstreamConnection* conn);  // left the idle list to carry a request
  void on_closed(UpstreamConnection* conn, bool was_idle);

  UpstreamConnection* open();
  PoolWaiter* pop_waiter();
  void arm_idle_timer();
  static void on_idle_timer(uv_timer_t* timer);

  uv_loop_t* loop_;
  Address address_;
  const UpstreamConfig& config_;
  std::size_t cap_;
  std::size_t max_idle_;
  EndpointStats& stats_;
  const TlsClientContext* tls_;
  std::string server_name_;
  SSL_SESSION* tls_session_ = nullptr;
  std::string tls_last_reason_;
  std::uint64_t tls_logged_ms_ = 0;
  std::uint64_t tls_unlogged_ = 0;
  IdleList idle_;
  std::size_t total_ = 0;
  std::unordered_set<UpstreamConnection*> all_;
  IntrusiveList<PoolWaiter, &PoolWaiter::wait_hook> waiters_;
  uv_timer_t* idle_timer_;  // heap: freed in its close callback, which may run after the pool
  bool closed_ = false;
};

}  // namespace bulwark
