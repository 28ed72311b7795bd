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
#include "pipeline/attempt.h"
#include "pipeline/generation_pin.h"
#include "pipeline/route_state.h"
#include "resilience/circuit_breaker.h"
#include "resilience/redis_limiter.h"
#include "resilience/shed_gate.h"
#include "upstream/connection.h"
#include "upstream/pool.h"
#include "upstream/upstream.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define BULWARK_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define BULWARK_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define BULWARK_POISON(p, n) ((void)(p), (void)(n))
#define BULWARK_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace bulwark {

class Downstream;
struct ListenerView;
struct RouteStats;
class UpstreamStream;

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

// What the client's protocol layer read of a request head, for Exchange::start_request.
struct RequestStart {
  std::uint8_t method = HTTP_GET;
  int http_major = 1;
  int http_minor = 1;
  bool upgrade = false;  // llhttp's upgrade flag: the request asks to switch protocols
  bool chunked = false;  // the body comes in chunks (HTTP/1.1), or as HTTP/2 DATA frames without a length
  bool has_content_length = false;
  std::uint64_t content_length = 0;
  // A local reply decided at the head of a request without a body may wait for the end of
  // that request, keeping the connection (HTTP/1); otherwise it goes out at once.
  bool defer_reply = true;
};

// The request itself: routed and admitted when its head is parsed (start_request), then its
// attempts: an endpoint and a pooled connection each, the request streamed up and the response
// down through its client connection, failures retried or answered with a local reply.
class Exchange final : public PendingRequest, public RateDecisionWaiter, public ShedWaiter {
 public:
  explicit Exchange(Downstream& owner) : client(owner) {}
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;
  ~Exchange();

  // PendingRequest (bulkhead queue)
  void on_admitted() override;
  void on_pending_timeout() override;
  // RateDecisionWaiter (global rate limits)
  void on_rate_decision(bool ok, const RateDecision& decision) override;
  // ShedWaiter (the load-shedding queue)
  void on_shed_admitted() override;
  void on_shed_rejected(const char* detail) override;
  // The current attempt's upstream connection (passed on by Attempt).
  void on_upstream_connected();
  void on_upstream_interim(UpstreamStream& conn);
  void on_upstream_headers(UpstreamStream& conn);
  void on_upstream_chunk_header(std::uint64_t size);
  void on_upstream_body(const char* data, std::size_t len);
  void on_upstream_chunk_complete();
  void on_upstream_complete();
  void on_upstream_tunnel_data(const char* data, std::size_t len);
  void on_upstream_error(UpstreamError error, std::string_view detail);
  void on_upstream_batch_end();
  void on_upstream_drained();
  // A full pool handed the attempt its connection.
  void on_pool_connection(UpstreamStream* conn);

  // An admission stage that made the request wait has decided: goes on with the next stage
  // (then the first attempt), or sends the rejection's local reply.
  void resume_admission(const Verdict& v);

  int start_request(const RequestStart& head);  // llhttp on_headers_complete result
  int reply_from_headers(Reason reason, std::string_view detail, int reply_status = 0);
  // Runs the worker's admission stages from the exchange's next one; when all admit, starts
  // the first attempt. `resumed`: called back by a stage, not while the head is handled.
  void run_admission(bool resumed);
  // Answers a rejected request (reply_from_headers while the head is handled).
  void refuse(const Verdict& v, bool resumed);
  // Takes the exchange out of admission: a wait cancelled, its bulkhead slot given back.
  void leave_admission();
  void send_continue();
  bool start_attempt();
  void use_connection(UpstreamStream* conn);
  void forward_body(const char* data, std::size_t len);
  // Request bytes for the upstream: to the connection, or kept while the request is queued.
  void upstream_add(const char* data, std::size_t len, bool borrowed);
  void upstream_add_chunk_header(std::uint64_t size);
  void end_attempt(CallResult result = CallResult::cancelled);
  void end_request_body();
  bool request_has_body() const {
    return request_framing == BodyFraming::chunked ||
           (request_framing == BodyFraming::content_length && request_content_length > 0);
  }
  void upstream_failed(Reason reason, UpstreamError error, std::string_view detail = {});
  // A reset on a reused keep-alive connection before anything was processed: the request goes
  // again on a fresh connection to the same endpoint, which is not blamed.
  bool replays_stale_connection(UpstreamError error) const;
  // Takes back a response head that has not reached the socket yet, so that a failure can
  // still be answered with a local reply. False when some of the response went out.
  bool retract_response();
  void detach_upstream(bool reusable, CallResult result = CallResult::cancelled);
  // The breaker hears each attempt's outcome once; `cancelled` when it was not the endpoint's
  // doing.
  void report_breaker(CallResult result);
  CallResult breaker_result(bool counted) const;
  void record_upstream_outcome(int outcome);
  // Load shedding: the current attempt's sample for the concurrency limit, taken once (an
  // attempt that the client abandons, or that fails for Bulwark's own reasons, gives none).
  // `dropped`: a timeout, reset, connect failure, 503 or 504, a sign of overload.
  void shed_sample(bool dropped);
  // Whether a response status is a sign of overload for the concurrency limit: 503 (the
  // upstream says it is overloaded) and 504 (its own upstream timed out). Other 5xx are
  // ordinary samples: a fast 500 says nothing about load, and counted as drops, one client
  // sending requests that fail at once would cut the limit for everyone (10 % a round trip).
  static bool overload_status(int status) { return status == 503 || status == 504; }
  // The request phase's timer: the route deadline, or sooner the body_idle deadline while the
  // body is being read.
  void arm_request_timer();
  void on_request_timeout();
  // The client is expected to send request body bytes now: the body is incomplete, we are
  // reading, and the client was not told to wait (100-continue not yet sent).
  bool awaiting_client_body() const;
  // The request's body did not arrive in time: 408, closing; the attempt in progress, if any,
  // ends without blame (the endpoint and its breaker hear `cancelled`).
  void client_timeout(const char* detail);

  // Retries (exchange_retry.cc).
  // Decides whether a failed attempt is retried; if so, takes the budget, counts it and
  // schedules the next attempt after the back-off. `reason` indexes RouteStats::retries.
  bool try_retry(int reason, bool allowed_kind, std::uint64_t retry_after_ms = 0);
  // Waits out the back-off (the back-off timer), then start_retry().
  void schedule_retry();
  static void on_backoff_timer(uv_timer_t* timer);
  // The current attempt's per_try_timeout (the per-try timer); stopped when the attempt ends.
  void arm_per_try_timer(std::uint64_t ms);
  static void on_per_try_timer(uv_timer_t* timer);
  void on_per_try_timeout();
  void start_retry();
  // Should a response with this status be retried instead of passed on? (Takes the budget.)
  bool retry_response(const UpstreamStream& conn);
  // The grpc-status of the response to a gRPC request (HTTP 200) known so far: in the
  // trailers, or in the head of a trailers-only response; -1 when there is none.
  int grpc_status_of(const UpstreamStream& conn) const;
  // The status breakers, outcomes and load shedding judge: a gRPC status as its HTTP
  // equivalent (UNAVAILABLE as 503, ...), else the HTTP status.
  int judged_status(const UpstreamStream& conn) const;
  std::uint64_t time_left_ms() const;  // until the route timeout; ~0 when there is none
  // The route's retry.per_try_timeout, 0 when there is none.
  std::uint64_t per_try_ms() const {
    return route_state && route_state->retry ? route_state->retry->config().per_try_timeout_ms : 0;
  }
  void append_attempts_header(std::string& extra) const;

  Downstream& client;  // the connection (HTTP/1) or stream (HTTP/2) the request came on
  // The listener as the generation in effect when the request began configures it; the pin
  // keeps that generation (its routes, upstreams and their pools) alive until the request
  // ends. Declared before what it keeps alive, so destroyed after it.
  const ListenerView* view = nullptr;
  GenerationPin pin;

  // Admission: the next stage to run, and what the stages hold.
  std::size_t next_stage = 0;
  AdmissionStage* waiting_stage = nullptr;  // deferred the exchange; resumes it later
  ShedTicket shed;              // a unit of the upstream's concurrency limit
  Priority priority = Priority::normal;  // from load_shedding.priority_header
  bool shed_waiting = false;    // waits in the load-shedding queue
  bool shadow_shed = false;     // over the limit in shadow mode
  std::uint64_t attempt_start_us = 0;  // the current attempt's start (0: no sample to take)
  int attempt_inflight = 0;            // in flight against the limit when it started
  BulkheadTicket bulkhead;
  RedisRateLimiter::Pending* ratelimit_pending = nullptr;  // waiting for Redis
  int fault_abort = 0;  // fault injection: the status to abort with after the delay (0: none)
  bool queued = false;                                     // waits for a bulkhead slot

  // The current attempt (one at a time; reused by the next one).
  Attempt attempt{*this};

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
  RequestStart request_start;    // as start_request() was given it
};

// A worker's storage for exchanges: constructed in place when a request begins; when it ends,
// retired and destroyed on the next loop iteration (sweep()), never from inside its own
// callbacks; the memory is kept for later requests (no allocation per request in steady state).
class ExchangePool {
 public:
  ExchangePool() = default;
  ExchangePool(const ExchangePool&) = delete;
  ExchangePool& operator=(const ExchangePool&) = delete;
  ~ExchangePool() {
    sweep();
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
    ++in_use_;
    return new (p) Exchange(owner);
  }
  // The request has ended: from here on nothing may touch `x` (under AddressSanitizer any
  // access is reported) until sweep() destroys it.
  void retire(Exchange* x) {
    --in_use_;
    retired_.push_back(x);
    BULWARK_POISON(x, sizeof(Exchange));
  }
  // Exchanges made and not retired yet: the requests in progress (for tests).
  std::size_t in_use() const { return in_use_; }
  // Destroys the retired exchanges (the loop is between callbacks).
  void sweep() {
    for (Exchange* x : retired_) {
      BULWARK_UNPOISON(x, sizeof(Exchange));
      x->~Exchange();
      free_.push_back(x);
    }
    retired_.clear();
  }

 private:
  std::vector<void*> free_;
  std::vector<Exchange*> retired_;
  std::size_t in_use_ = 0;
};

}  // namespace bulwark
