// One try of an exchange against one endpoint (Envoy's upstream request): the endpoint's
// claim (counted in flight, the breaker told the outcome once), the wait for a connection of a
// full pool, and the upstream connection while the attempt has it. The connection's events go
// to the exchange, which decides what they mean for the request.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string_view>

#include "resilience/circuit_breaker.h"
#include "upstream/connection.h"
#include "upstream/pool.h"
#include "upstream/upstream.h"

namespace bulwark {

class Exchange;

// An attempt's claim on an endpoint: counted in flight there while held, and its outcome told
// to the endpoint's circuit breaker exactly once, in the attempt's own half-open generation
// (the probe ticket). Ended without a verdict, the breaker hears `cancelled`.
class EndpointClaim {
 public:
  EndpointClaim() = default;
  EndpointClaim(const EndpointClaim&) = delete;
  EndpointClaim& operator=(const EndpointClaim&) = delete;
  ~EndpointClaim() { end(CallResult::cancelled); }

  void begin(Upstream& upstream, UpstreamEndpoint& endpoint, ProbeTicket probe,
             std::uint64_t now_ms, uv_loop_t* loop) {
    end(CallResult::cancelled);
    upstream_ = &upstream;
    endpoint_ = &endpoint;
    probe_ = probe;
    start_ms_ = now_ms;
    loop_ = loop;
    reported_ = false;
    upstream.begin_request(endpoint);
  }
  UpstreamEndpoint* endpoint() const { return endpoint_; }
  // Tells the breaker once; later calls (and the end) add nothing.
  void report(CallResult result) {
    if (!endpoint_ || reported_) return;
    reported_ = true;
    CircuitBreaker* breaker = endpoint_->state->breaker.get();
    if (!breaker) return;
    std::uint64_t now = uv_now(loop_);
    breaker->record(upstream_->worker(), result, now - start_ms_, probe_, now);
  }
  // The attempt is over: reported (with `result` unless reported before) and no longer in
  // flight.
  void end(CallResult result) {
    if (!endpoint_) return;
    report(result);
    UpstreamEndpoint* e = endpoint_;
    endpoint_ = nullptr;
    upstream_->end_request(*e);
  }

 private:
  Upstream* upstream_ = nullptr;
  UpstreamEndpoint* endpoint_ = nullptr;
  ProbeTicket probe_ = 0;
  std::uint64_t start_ms_ = 0;
  uv_loop_t* loop_ = nullptr;
  bool reported_ = false;
};

class Attempt final : public UpstreamClient, public PoolWaiter {
 public:
  explicit Attempt(Exchange& exchange) : x_(exchange) {}
  Attempt(const Attempt&) = delete;
  Attempt& operator=(const Attempt&) = delete;
  ~Attempt() { end(CallResult::cancelled); }

  // Starts on `endpoint` (claimed): a connection from its pool, or nullptr when the pool is
  // full (on_pool_connection follows, unless the attempt ends first).
  UpstreamStream* begin(Upstream& upstream, UpstreamEndpoint& endpoint, ProbeTicket probe,
                            std::uint64_t now_ms, uv_loop_t* loop) {
    claim.begin(upstream, endpoint, probe, now_ms, loop);
    return endpoint.pool->acquire(this);
  }
  // Ends the attempt: no longer waiting for a connection, the breaker told `result` (unless
  // told before), the endpoint no longer in flight.
  void end(CallResult result) {
    UpstreamEndpoint* endpoint = claim.endpoint();
    if (!endpoint) return;
    if (waiting()) endpoint->pool->cancel_wait(this);
    claim.end(result);
  }

  EndpointClaim claim;
  UpstreamStream* conn = nullptr;  // attached to this attempt

  // UpstreamClient
  void on_upstream_connected() override;
  void on_upstream_interim(UpstreamStream& c) override;
  void on_upstream_headers(UpstreamStream& c) override;
  void on_upstream_chunk_header(std::uint64_t size) override;
  void on_upstream_body(const char* data, std::size_t len) override;
  void on_upstream_chunk_complete() override;
  void on_upstream_complete() override;
  void on_upstream_tunnel_data(const char* data, std::size_t len) override;
  void on_upstream_error(UpstreamError error, std::string_view detail) override;
  void on_upstream_batch_end() override;
  void on_upstream_drained() override;
  // PoolWaiter
  void on_pool_connection(UpstreamStream* c) override;
  void on_pool_failure(UpstreamError error) override;

 private:
  Exchange& x_;
};

}  // namespace bulwark
