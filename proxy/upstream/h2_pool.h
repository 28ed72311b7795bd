// HTTP/2 connections to one endpoint, for one worker (`protocol: h2`). A request gets a stream
// on the oldest connection with room (below the peer's SETTINGS_MAX_CONCURRENT_STREAMS and the
// upstream's http2.max_concurrent_streams), so streams pack onto few connections; another
// connection is opened only when all are full, up to `cap`; past that, requests wait in FIFO
// order for a stream to end. A connection that carries no stream is closed after
// pool.idle_timeout; one the upstream sent GOAWAY on takes no new streams.
#pragma once

#include <vector>

#include "upstream/h2_connection.h"
#include "upstream/pool.h"

namespace bulwark {

class H2Pool final : public EndpointPool {
 public:
  H2Pool(uv_loop_t* loop, const Address& address, const UpstreamConfig& config, std::size_t cap,
         EndpointStats& stats, const TlsClientContext* tls = nullptr, std::string server_name = {});
  ~H2Pool() override;

  UpstreamStream* acquire(PoolWaiter* waiter) override;
  // An HTTP/2 stream that failed unprocessed goes again on any connection with room: one
  // that went away or failed takes no new streams anyway.
  UpstreamStream* acquire_new(PoolWaiter* waiter) override { return acquire(waiter); }
  void close_idle() override;
  void close_all() override;
  std::size_t connections() const { return conns_.size(); }

 private:
  friend class H2UpstreamConnection;
  // Called by connections.
  void on_room(H2UpstreamConnection* conn);    // a stream ended, or the peer allowed more
  // Gone: room for another connection. `unsettled`: it failed before the upstream's SETTINGS
  // came, with `error`; the requests waiting for it fail with that error.
  void on_closed(H2UpstreamConnection* conn, bool unsettled, UpstreamError error);
  void serve_waiters();
  H2UpstreamConnection* open();

  std::vector<H2UpstreamConnection*> conns_;
  bool closed_ = false;
  bool serving_ = false;  // in serve_waiters (no nested pass)
};

}  // namespace bulwark
