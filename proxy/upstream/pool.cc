#include "upstream/pool.h"

#include "core/log.h"
#include "upstream/connection.h"

namespace bulwark {

EndpointPool::EndpointPool(uv_loop_t* loop, const Address& address, const UpstreamConfig& config,
                           std::size_t cap, EndpointStats& stats, const TlsClientContext* tls,
                           std::string server_name)
    : loop_(loop),
      address_(address),
      config_(config),
      cap_(cap),
      stats_(stats),
      tls_(tls),
      server_name_(std::move(server_name)) {}

EndpointPool::~EndpointPool() {
  if (tls_session_) SSL_SESSION_free(tls_session_);
}

void EndpointPool::log_tls_failure(const std::string& reason) {
  std::uint64_t now = uv_now(loop_);
  if (reason == tls_last_reason_ && now < tls_logged_ms_ + 10000) {
    ++tls_unlogged_;
    return;
  }
  std::string line = "upstream " + config_.name + " endpoint " + address_.to_string() +
                     ": TLS handshake failed: " + reason;
  if (tls_unlogged_ > 0)
    line += " (and " + std::to_string(tls_unlogged_) + " more failures since the last line)";
  log_warn(line);
  tls_last_reason_ = reason;
  tls_logged_ms_ = now;
  tls_unlogged_ = 0;
}

void EndpointPool::set_tls_session(SSL_SESSION* session) {
  if (tls_session_) SSL_SESSION_free(tls_session_);
  tls_session_ = session;
}

PoolWaiter* EndpointPool::pop_waiter() {
  PoolWaiter* w = waiters_.front();
  if (w) waiters_.remove(*w);
  return w;
}

ConnectionPool::ConnectionPool(uv_loop_t* loop, const Address& address,
                               const UpstreamConfig& config, std::size_t cap, std::size_t max_idle,
                               EndpointStats& stats, const TlsClientContext* tls,
                               std::string server_name)
    : EndpointPool(loop, address, config, cap, stats, tls, std::move(server_name)),
      max_idle_(max_idle),
      idle_timer_(new uv_timer_t) {
  uv_timer_init(loop_, idle_timer_);
  idle_timer_->data = this;
}

ConnectionPool::~ConnectionPool() { close_all(); }

UpstreamConnection* ConnectionPool::open() {
  auto* conn = new UpstreamConnection(*this, loop_);
  all_.insert(conn);
  ++total_;
  stats_.active.add(1);
  conn->connect(address_.sockaddr_ptr(), config_.connect_timeout_ms);
  return conn;
}

UpstreamConnection* ConnectionPool::acquire(PoolWaiter* waiter) {
  if (IdleHook* h = idle_.newest()) return static_cast<UpstreamConnection*>(h->owner);
  return acquire_new(waiter);
}

UpstreamConnection* ConnectionPool::acquire_new(PoolWaiter* waiter) {
  if (total_ < cap_ && !closed_) return open();
  if (waiter) wait(waiter);
  return nullptr;
}

void ConnectionPool::on_idle(UpstreamConnection* conn) {
  stats_.active.add(-1);
  stats_.idle.add(1);
  idle_.push_newest(conn->idle_hook_, uv_now(loop_));
  if (PoolWaiter* w = pop_waiter()) {
    w->on_pool_connection(conn);  // attach() takes it off the idle list again
    return;
  }
  while (idle_.size() > max_idle_) static_cast<UpstreamConnection*>(idle_.oldest()->owner)->close();
  arm_idle_timer();
}

void ConnectionPool::on_active(UpstreamConnection* conn) {
  idle_.remove(conn->idle_hook_);
  stats_.idle.add(-1);
  stats_.active.add(1);
}

void ConnectionPool::on_closed(UpstreamConnection* conn, bool was_idle) {
  if (was_idle) {
    idle_.remove(conn->idle_hook_);
    stats_.idle.add(-1);
  } else {
    stats_.active.add(-1);
  }
  all_.erase(conn);
  --total_;
  // Room for a new connection: give it to the longest waiting request.
  if (has_waiters() && total_ < cap_ && !closed_) {
    PoolWaiter* w = pop_waiter();
    w->on_pool_connection(open());
  }
}

// Entries join the idle list newest-first, so the oldest entry's expiry never moves earlier:
// a running timer is left alone (no timer work per released connection); when it fires
// it closes what expired and re-arms for the next oldest.
void ConnectionPool::arm_idle_timer() {
  if (closed_ || uv_is_active(reinterpret_cast<uv_handle_t*>(idle_timer_))) return;
  std::int64_t in = idle_.next_expiry_in(uv_now(loop_), config_.pool.idle_timeout_ms);
  if (in >= 0) uv_timer_start(idle_timer_, on_idle_timer, static_cast<std::uint64_t>(in), 0);
}

void ConnectionPool::on_idle_timer(uv_timer_t* timer) {
  auto* pool = static_cast<ConnectionPool*>(timer->data);
  std::uint64_t now = uv_now(pool->loop_);
  while (IdleHook* h = pool->idle_.expired(now, pool->config_.pool.idle_timeout_ms))
    static_cast<UpstreamConnection*>(h->owner)->close();
  pool->arm_idle_timer();
}

void ConnectionPool::close_idle() {
  while (IdleHook* h = idle_.newest()) static_cast<UpstreamConnection*>(h->owner)->close();
}

void ConnectionPool::close_all() {
  closed_ = true;
  drop_waiters();
  while (!all_.empty()) (*all_.begin())->close();
  if (idle_timer_) {
    uv_close(reinterpret_cast<uv_handle_t*>(idle_timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    idle_timer_ = nullptr;
  }
}

}  // namespace bulwark
