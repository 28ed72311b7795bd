#include "upstream/h2_pool.h"

#include <algorithm>

namespace bulwark {

H2Pool::H2Pool(uv_loop_t* loop, const Address& address, const UpstreamConfig& config,
               std::size_t cap, EndpointStats& stats, const TlsClientContext* tls,
               std::string server_name)
    : EndpointPool(loop, address, config, cap, stats, tls, std::move(server_name)) {}

H2Pool::~H2Pool() { close_all(); }

H2UpstreamConnection* H2Pool::open() {
  auto* conn = new H2UpstreamConnection(*this, loop_);
  conns_.push_back(conn);
  stats_.active.add(1);
  conn->connect(address_.sockaddr_ptr(), config_.connect_timeout_ms);
  return conn;
}

UpstreamStream* H2Pool::acquire(PoolWaiter* waiter) {
  if (!closed_) {
    // The oldest connection with room: streams pack onto few connections.
    bool settling = false;
    for (H2UpstreamConnection* c : conns_) {
      if (c->has_room()) return c->open_stream();
      settling |= !c->settled() && !c->closing();
    }
    // A new connection's limit is not known yet: wait for it rather than open more.
    if (conns_.size() < cap_ && (!settling || !waiter)) return open()->open_stream();
  }
  if (waiter) wait(waiter);
  return nullptr;
}

void H2Pool::serve_waiters() {
  if (serving_ || closed_) return;
  serving_ = true;
  while (has_waiters()) {
    H2UpstreamConnection* room = nullptr;
    bool settling = false;
    for (H2UpstreamConnection* c : conns_) {
      if (c->has_room()) {
        room = c;
        break;
      }
      settling |= !c->settled() && !c->closing();
    }
    if (!room && !settling && conns_.size() < cap_) room = open();
    if (!room) break;
    pop_waiter()->on_pool_connection(room->open_stream());
  }
  serving_ = false;
}

void H2Pool::on_room(H2UpstreamConnection*) { serve_waiters(); }

void H2Pool::on_closed(H2UpstreamConnection* conn, bool unsettled, UpstreamError error) {
  auto it = std::find(conns_.begin(), conns_.end(), conn);
  if (it != conns_.end()) conns_.erase(it);
  if (unsettled && !closed_) {
    // They waited for this connection's SETTINGS: they fail now, as its own stream did,
    // instead of trying one new connection after another, one connect_timeout each. (Those
    // that wait again meanwhile, a stale-connection replay, wait for the next one.)
    std::vector<PoolWaiter*> failed;
    while (PoolWaiter* w = pop_waiter()) failed.push_back(w);
    for (PoolWaiter* w : failed) w->on_pool_failure(error);
  }
  serve_waiters();
}

void H2Pool::close_idle() {
  std::vector<H2UpstreamConnection*> idle;
  for (H2UpstreamConnection* c : conns_)
    if (c->streams() == 0) idle.push_back(c);
  for (H2UpstreamConnection* c : idle) c->close();
}

void H2Pool::close_all() {
  closed_ = true;
  drop_waiters();
  while (!conns_.empty()) conns_.front()->close();  // on_closed takes it off the list
}

}  // namespace bulwark
