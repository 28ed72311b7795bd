#include "upstream/pool.h"

#include "upstream/connection.h"

namespace bulwark {

ConnectionPool::ConnectionPool(uv_loop_t* loop, const Address& address,
                               const UpstreamConfig& config, EndpointStats& stats)
    : loop_(loop), address_(address), config_(config), stats_(stats) {}

ConnectionPool::~ConnectionPool() { close_all(); }

UpstreamConnection* ConnectionPool::acquire() {
  if (idle_head_) return idle_head_;  // attach() moves it out of the idle list
  if (total_ >= config_.pool.max_connections) return nullptr;
  auto* conn = new UpstreamConnection(*this, loop_);
  all_.insert(conn);
  ++total_;
  stats_.active.add(1);
  conn->connect(address_.sockaddr_ptr(), config_.connect_timeout_ms);
  return conn;
}

void ConnectionPool::on_idle(UpstreamConnection* conn) {
  stats_.active.add(-1);
  stats_.idle.add(1);
  conn->idle_prev = nullptr;
  conn->idle_next = idle_head_;
  if (idle_head_) idle_head_->idle_prev = conn;
  idle_head_ = conn;
  ++idle_count_;
  // Over max_idle: close the least recently used.
  while (idle_count_ > config_.pool.max_idle) {
    UpstreamConnection* last = idle_head_;
    while (last->idle_next) last = last->idle_next;
    last->close();
  }
}

void ConnectionPool::unlink_idle(UpstreamConnection* conn) {
  if (conn->idle_prev) conn->idle_prev->idle_next = conn->idle_next;
  else idle_head_ = conn->idle_next;
  if (conn->idle_next) conn->idle_next->idle_prev = conn->idle_prev;
  conn->idle_prev = conn->idle_next = nullptr;
  --idle_count_;
}

void ConnectionPool::on_active(UpstreamConnection* conn) {
  unlink_idle(conn);
  stats_.idle.add(-1);
  stats_.active.add(1);
}

void ConnectionPool::on_closed(UpstreamConnection* conn, bool was_idle) {
  if (was_idle) {
    unlink_idle(conn);
    stats_.idle.add(-1);
  } else {
    stats_.active.add(-1);
  }
  all_.erase(conn);
  --total_;
}

void ConnectionPool::close_idle() {
  while (idle_head_) idle_head_->close();
}

void ConnectionPool::close_all() {
  while (!all_.empty()) (*all_.begin())->close();
}

}  // namespace bulwark
