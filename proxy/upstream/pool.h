// Connections to one endpoint, for one worker. HTTP/1.1 (ConnectionPool): idle keep-alive
// connections are reused newest first, are watched while idle (a backend that closes one is
// noticed at once), and are closed after idle_timeout (one timer per pool) or beyond max_idle.
// HTTP/2: see upstream/h2_pool.h. At most `cap` connections are open; past that, requests
// wait in FIFO order for room.
#pragma once

#include <uv.h>

#include <cstdint>
#include <unordered_set>

#include "admin/stats.h"
#include "config/config.h"
#include "core/intrusive_list.h"
#include "net/tls.h"
#include "upstream/connection.h"
#include "upstream/idle_list.h"
#include "upstream/stream.h"

namespace bulwark {

// A request waiting for a stream of a full pool.
class PoolWaiter {
 public:
  virtual void on_pool_connection(UpstreamStream* stream) = 0;
  // The connection it waited for could not be made (HTTP/2: a new connection that failed
  // before the upstream's SETTINGS came): the request fails as that connection did.
  virtual void on_pool_failure(UpstreamError error) = 0;
  ListHook<PoolWaiter> wait_hook;
  bool waiting() const { return wait_hook.linked; }

 protected:
  ~PoolWaiter() = default;
};

// The connections of one worker to one endpoint, in the upstream's protocol: what both kinds
// share (the endpoint, its counters and TLS, the requests waiting for room) and what the
// request path asks of them.
class EndpointPool {
 public:
  // `cap`: connections this pool may open (the worker's share of pool.max_connections).
  // `tls`: the upstream's TLS context when it has a tls block (null there: the context could
  // not be made, and every connection fails); `server_name`: the endpoint's host (SNI).
  EndpointPool(uv_loop_t* loop, const Address& address, const UpstreamConfig& config,
               std::size_t cap, EndpointStats& stats, const TlsClientContext* tls,
               std::string server_name);
  virtual ~EndpointPool();
  EndpointPool(const EndpointPool&) = delete;
  EndpointPool& operator=(const EndpointPool&) = delete;

  // A stream for a request: on an idle or a new connection (HTTP/1), or on a connection with
  // room for another stream (HTTP/2). When the pool is full: nullptr, and `waiter` gets one
  // later (on_pool_connection) unless it cancels.
  virtual UpstreamStream* acquire(PoolWaiter* waiter) = 0;
  // Like acquire(), but never on a connection that carried requests before: after a reused
  // one turned out dead.
  virtual UpstreamStream* acquire_new(PoolWaiter* waiter) = 0;
  void cancel_wait(PoolWaiter* waiter) { waiters_.remove(*waiter); }
  // Closes the connections that carry no request.
  virtual void close_idle() = 0;
  // Closes every connection, idle or not, and the pool's timers (shutdown).
  virtual void close_all() = 0;

  std::size_t cap() const { return cap_; }
  EndpointStats& stats() { return stats_; }
  const UpstreamConfig& config() const { return config_; }
  const Address& address() const { return address_; }
  uv_loop_t* loop() const { return loop_; }
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

 protected:
  void wait(PoolWaiter* waiter) {
    if (!waiter->waiting()) waiters_.push_back(*waiter);
  }
  PoolWaiter* pop_waiter();
  bool has_waiters() const { return !waiters_.empty(); }
  void drop_waiters() {
    while (pop_waiter()) {
    }
  }

  uv_loop_t* loop_;
  Address address_;
  const UpstreamConfig& config_;
  std::size_t cap_;
  EndpointStats& stats_;

 private:
  const TlsClientContext* tls_;
  std::string server_name_;
  SSL_SESSION* tls_session_ = nullptr;
  std::string tls_last_reason_;
  std::uint64_t tls_logged_ms_ = 0;
  std::uint64_t tls_unlogged_ = 0;
  IntrusiveList<PoolWaiter, &PoolWaiter::wait_hook> waiters_;
};

// HTTP/1.1 keep-alive connections, one request each at a time.
class ConnectionPool final : public EndpointPool {
 public:
  ConnectionPool(uv_loop_t* loop, const Address& address, const UpstreamConfig& config,
                 std::size_t cap, std::size_t max_idle, EndpointStats& stats,
                 const TlsClientContext* tls = nullptr, std::string server_name = {});
  ~ConnectionPool() override;

  UpstreamConnection* acquire(PoolWaiter* waiter) override;
  UpstreamConnection* acquire_new(PoolWaiter* waiter) override;
  std::size_t total() const { return total_; }
  std::size_t idle() const { return idle_.size(); }
  void close_idle() override;
  void close_all() override;

 private:
  friend class UpstreamConnection;
class UpstreamStream;
  // Called by connections.
  void on_idle(UpstreamConnection* conn);    // became idle: to a waiter, the idle list, or closed
  void on_active(UpstreamConnection* conn);  // left the idle list to carry a request
  void on_closed(UpstreamConnection* conn, bool was_idle);

  UpstreamConnection* open();
  void arm_idle_timer();
  static void on_idle_timer(uv_timer_t* timer);

  std::size_t max_idle_;
  IdleList idle_;
  std::size_t total_ = 0;
  std::unordered_set<UpstreamConnection*> all_;
  uv_timer_t* idle_timer_;  // heap: freed in its close callback, which may run after the pool
  bool closed_ = false;
};

}  // namespace bulwark
