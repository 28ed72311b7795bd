// An upstream as one worker sees it: a local entry per endpoint (its connection pool and the
// worker's in-flight count, which drives least_request), the balancer, and the worker's
// queue of requests waiting for the upstream's bulkhead.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/intrusive_list.h"
#include "resilience/shed_gate.h"
#include "upstream/balancer.h"
#include "upstream/pool.h"
#include "upstream/upstream_state.h"

namespace bulwark {

struct UpstreamEndpoint {
  std::shared_ptr<EndpointState> state;
  std::unique_ptr<EndpointPool> pool;
  std::int64_t in_flight = 0;
  bool retired = false;  // gone from DNS: finishes its requests, then is freed
  const std::string& name() const { return state->name; }
};

// A request waiting for admission (implemented by Exchange).
class PendingRequest {
 public:
  virtual void on_admitted() = 0;
  virtual void on_pending_timeout() = 0;
  ListHook<PendingRequest> pending_hook;
  std::uint64_t pending_deadline_ms = 0;

 protected:
  ~PendingRequest() = default;
};

class Upstream {
 public:
  Upstream(uv_loop_t* loop, UpstreamState& state, int worker, std::uint64_t seed);
  ~Upstream();
  Upstream(const Upstream&) = delete;
  Upstream& operator=(const Upstream&) = delete;

  const UpstreamConfig& config() const { return state_.config(); }
  UpstreamState& state() { return state_; }
  // Takes the shared endpoint list again (the worker was told it changed).
  void refresh_endpoints();
  struct Pick {
    UpstreamEndpoint* endpoint = nullptr;  // null: none may take the request
    ProbeTicket probe = 0;                 // a half-open probe: report it to the breaker
    bool circuit_open = false;             // null because every endpoint's breaker is open
    std::uint64_t retry_after_ms = 0;      // then: until the earliest may half-open
  };
  // The endpoint for the next attempt. Skips endpoints whose breaker is open unless more
  // than max_ejected are (panic mode); `exclude` is avoided when another is usable.
  Pick pick(std::uint64_t now_ms, const UpstreamEndpoint* exclude = nullptr);
  bool panic() const { return panic_; }
  // This worker's load-shedding gate (null when the upstream has no load_shedding block).
  ShedGate* shed_gate() { return shed_gate_.get(); }
  int worker() const { return worker_; }
  EndpointStats& stats(UpstreamEndpoint& e) { return e.state->per_worker[worker_]; }
  void begin_request(UpstreamEndpoint& e);
  void end_request(UpstreamEndpoint& e);

  enum class Admission { admitted, queued, rejected };
  // Bulkhead: admitted at once, queued (on_admitted or on_pending_timeout follows), or rejected.
  Admission admit(PendingRequest& request);
  // A queued request that goes away before its turn.
  void cancel(PendingRequest& request);
  // An admitted request finished: frees its slot; the next waiting one is admitted on the next
  // loop turn (from the pending timer), or another worker is told.
  void release();
  // Another worker freed a slot of the bulkhead: try to admit waiting requests.
  void admit_waiting();
  bool has_waiting() const { return !queue_.empty(); }
  // Hook to tell the other workers that a slot was freed while requests wait elsewhere.
  void set_slot_freed_hook(std::function<void()> hook) { slot_freed_ = std::move(hook); }
  // Test seam: runs in admit() between the failed admission and the enqueue, where another
  // worker's release() can interleave.
  void set_before_enqueue_hook(std::function<void()> hook) { before_enqueue_ = std::move(hook); }

  // Health checks marked endpoints down: their idle pooled connections go.
  void close_unhealthy_idle();
  void close_all();

 private:
  static void on_pending_timer(uv_timer_t* timer);
  void unlink(PendingRequest& r);
  void arm_pending_timer();
  void kick();  // on_pending_timer on the next loop turn
  void sweep_retired();

  uv_loop_t* loop_;
  UpstreamState& state_;
  int worker_;
  std::shared_ptr<const EndpointList> list_;
  std::vector<std::unique_ptr<UpstreamEndpoint>> live_;
  std::vector<std::unique_ptr<UpstreamEndpoint>> retired_;
  std::vector<std::int64_t> in_flight_scratch_;
  std::vector<std::size_t> candidates_;
  bool panic_ = false;
  Balancer balancer_;
  IntrusiveList<PendingRequest, &PendingRequest::pending_hook> queue_;
  uv_timer_t pending_timer_{};
  std::function<void()> slot_freed_;
  std::function<void()> before_enqueue_;
  // admit_waiting() is running: a release from inside on_admitted (a request answered at
  // once) leaves the freed slot to that running loop instead of recursing into it.
  bool admitting_ = false;
  bool kicked_ = false;
  std::unique_ptr<ShedGate> shed_gate_;
};

}  // namespace bulwark
