// One request on a client connection, from its first byte to the end of its response: what
// it was routed to, where it stands in admission, its attempts, and what goes into its log
// line. Made (constructed in storage recycled by the worker, see ExchangePool) when a request
// begins and destroyed when it ends, so nothing of one request leaks into the next; what it
// holds on shared state (a bulkhead slot, a breaker's verdict on the attempt) is released by
// its owners below even on exit paths that forget.
#pragma once

#include <llhttp.h>

#include <cstdint>
#include <memory>
#include <new>
#include <string_view>
#include <vector>

#include "http/headers.h"
#include "http/local_reply.h"
#include "pipeline/admission.h"
#include "pipeline/route_state.h"
#include "resilience/circuit_breaker.h"
#include "resilience/redis_limiter.h"
#include "upstream/upstream.h"

namespace bulwark {

class Downstream;
struct RouteStats;
class UpstreamConnection;

// A slot of an upstream's bulkhead (limits.max_requests), held while the request is admitted.
// Giving it back may admit another waiting request at once.
class BulkheadTicket {
 public:
  BulkheadTicket() = default;
  BulkheadTicket(const BulkheadTicket&) = delete;
  BulkheadTicket& operator=(const BulkheadTicket&) = delete;
  ~BulkheadTicket() { release(); }
  void take(Upstream& upstream) { upstream_ = &upstream; }
  bool held() const { return upstream_ != nullptr; }
  void release() {
    if (Upstream* u = upstream_) {
      upstream_ = nullptr;
      u->release();
    }
  }

 private:
  Upstream* upstream_ = nullptr;
};

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

// The request itself. Its connection drives it; it answers the admission stages' callbacks
// (a queued bulkhead slot, a Redis decision) and hands them to its connection.
class Exchange final : public PendingRequest, public RateDecisionWaiter {
 public:
  explicit Exchange(Downstream& owner) : connection(owner) {}
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;
  ~Exchange();

  // PendingRequest (bulkhead queue)
  void on_admitted() override;
  void on_pending_timeout() override;
  // RateDecisionWaiter (global rate limits)
  void on_rate_decision(bool ok, const RateDecision& decision) override;

  Downstream& connection;

  // Admission: the next stage to run, and what the stages hold.
  std::size_t next_stage = 0;
  AdmissionStage* waiting_stage = nullptr;  // deferred the exchange; resumes it later
  BulkheadTicket bulkhead;
  RedisRateLimiter::Pending* ratelimit_pending = nullptr;  // waiting for Redis
  bool queued = false;                                     // waits for a bulkhead slot

  // The current attempt.
  EndpointClaim claim;
  UpstreamConnection* up = nullptr;

  std::uint64_t start_ns = 0;
  int route = -1;
  RouteStats* route_stats = nullptr;
  Upstream* upstream = nullptr;
  RouteState* route_state = nullptr;
  bool replay_enabled = false;    // body bytes are kept for a retry
  bool replay_overflow = false;   // the body outgrew retry.max_body_bytes: no retry
  bool discard_response = false;  // a retriable response is read and dropped
  bool retry_pending = false;     // a retry is decided: waiting out the back-off
  std::uint64_t retry_delay_ms = 0;
  const UpstreamEndpoint* failed_endpoint = nullptr;  // avoided by the next attempt
  std::uint64_t route_deadline_ms = 0;                // 0: no route timeout
  // Last progress of the request body (loop time), for timeouts.body_idle.
  std::uint64_t body_activity_ms = 0;
  char reply_extra[256];  // extra header lines of the next local reply
  std::size_t reply_extra_len = 0;
  char ratelimit_header[64];  // "RateLimit: ..." for the response
  std::size_t ratelimit_header_len = 0;
  bool shadow_limited = false;
  std::string_view request_id;
  BodyFraming request_framing = BodyFraming::none;
  std::uint64_t request_content_length = 0;
  BodyFraming response_framing = BodyFraming::none;
  bool upstream_chunked = false;
  std::uint64_t request_body_bytes = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  int status = 0;
  int attempts = 0;
  Reason reply_reason = Reason::bad_request;
  bool local_reply_sent = false;
  bool pending_reply = false;  // decided in on_headers_complete, sent at message end
  Reason pending_reason = Reason::no_route;
  int pending_status = 0;
  bool head_request = false;
  bool request_complete = false;
  bool response_started = false;
  bool response_committed = false;  // response bytes were handed to the socket
  bool upgrade = false;
  bool body_sent_upstream = false;  // any request body byte went upstream
  bool sent_continue = false;
  bool accounted = false;
  int stale_retries = 0;
  bool last_attempt_reused = false;
  std::uint64_t response_chunk_size = 0;
  bool request_upgrade = false;  // llhttp's upgrade flag for the current request
};

// A worker's storage for exchanges: constructed in place when a request begins, destroyed when
// it ends, the memory kept for the next request (no allocation per request in steady state).
class ExchangePool {
 public:
  ExchangePool() = default;
  ExchangePool(const ExchangePool&) = delete;
  ExchangePool& operator=(const ExchangePool&) = delete;
  ~ExchangePool() {
    for (void* p : free_) ::operator delete (p, std::align_val_t{alignof(Exchange)});
  }
  Exchange* make(Downstream& owner) {
    void* p;
    if (free_.empty()) {
      p = ::operator new (sizeof(Exchange), std::align_val_t{alignof(Exchange)});
    } else {
      p = free_.back();
      free_.pop_back();
    }
    return new (p) Exchange(owner);
  }
  void destroy(Exchange* x) {
    x->~Exchange();
    free_.push_back(x);
  }

 private:
  std::vector<void*> free_;
};

}  // namespace bulwark
