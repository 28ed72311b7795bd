// Load shedding as one worker sees one upstream: admission against the process-wide
// concurrency limit (LoadShedder), the worker's priority queue of requests waiting for a unit
// of it (ShedQueue), and the one timer that serves that queue: deadlines, and work deferred to
// the next loop turn. Waiting requests are admitted, expired and evicted only from that timer,
// never from inside another request's callbacks, so admit -> reply -> release -> admit cannot
// recurse.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>

#include "core/intrusive_list.h"
#include "resilience/load_shedder.h"
#include "resilience/shed_queue.h"

namespace bulwark {

class ShedGate {
 public:
  ShedGate(uv_loop_t* loop, LoadShedder& shedder, int worker);
  ~ShedGate() = default;
  ShedGate(const ShedGate&) = delete;
  ShedGate& operator=(const ShedGate&) = delete;

  LoadShedder& shedder() { return shedder_; }
  const ShedQueue& queue() const { return queue_; }

  enum class Result {
    admitted,  // a unit of the limit is taken for it
    shadow,    // over the limit in shadow mode (enforce: false): counted, taken anyway
    queued,    // waits: on_shed_admitted or on_shed_rejected follows (unless cancelled)
    rejected,  // shed now (counted)
  };
  Result admit(ShedWaiter& w, Priority p);
  // A waiting request goes away: it is never called back.
  void cancel(ShedWaiter& w);
  // A unit taken for priority p is given back.
  void release(Priority p);
  // Another worker gave back a unit while requests wait here.
  void wake() {
    if (!queue_.empty() || shedder_.owes_evictions(worker_)) kick();
  }
  // Called when a unit is given back here while requests wait only on other workers.
  void set_wake_others(std::function<void()> hook) { wake_others_ = std::move(hook); }
  // Whether a retry may go: the limit is not exceeded and no request waits for a unit (a
  // retry holds its request's unit; under overload it yields it to first attempts).
  bool retry_allowed() const;
  // One attempt completed (see LimitAlgorithm::on_sample).
  void sample(std::uint64_t now_us, std::uint64_t rtt_us, int inflight, bool dropped);
  void close();
  // How long until the gate's timer fires (for tests; ~0 when it is not armed).
  std::uint64_t next_event_in_ms() const {
    return uv_is_active(reinterpret_cast<const uv_handle_t*>(&timer_))
               ? uv_timer_get_due_in(&timer_)
               : ~std::uint64_t{0};
  }

  static const char* full_detail() {
    return "the upstream's concurrency limit is reached and its queue is full";
  }
  static const char* timeout_detail() {
    return "no concurrency freed up within the load-shedding queue's wait";
  }
  static const char* evicted_detail() {
    return "a request of higher priority took this request's place in the queue";
  }

 private:
  static void on_timer(uv_timer_t* timer);
  void run();
  void kick();  // run() on the next loop turn
  void arm();   // the timer at the queue's next deadline
  // Queue changes that keep the process-wide count of waiting critical requests.
  void push(ShedWaiter& w, Priority p, std::uint64_t now);
  void remove(ShedWaiter& w);
  ShedWaiter* taken(ShedWaiter* w);  // w left the queue through pop or pop_expired
  void wake_others() {
    if (wake_others_) wake_others_();
  }

  uv_loop_t* loop_;
  LoadShedder& shedder_;
  const int worker_;
  ShedQueue queue_;
  // Evicted from the queue; told on the next loop turn.
  IntrusiveList<ShedWaiter, &ShedWaiter::shed_hook> evicted_;
  uv_timer_t timer_{};
  bool kicked_ = false;
  bool running_ = false;
  std::function<void()> wake_others_;
};

}  // namespace bulwark

namespace bulwark {

// A unit of an upstream's concurrency limit, held by an admitted request. Giving it back may
// let a waiting request in (on the next loop turn).
class ShedTicket {
 public:
  ShedTicket() = default;
  ShedTicket(const ShedTicket&) = delete;
  ShedTicket& operator=(const ShedTicket&) = delete;
  ~ShedTicket() { release(); }
  void take(ShedGate& gate, Priority p) {
    release();
    gate_ = &gate;
    priority_ = p;
  }
  bool held() const { return gate_ != nullptr; }
  ShedGate* gate() const { return gate_; }
  void release() {
    if (ShedGate* g = gate_) {
      gate_ = nullptr;
      g->release(priority_);
    }
  }

 private:
  ShedGate* gate_ = nullptr;
  Priority priority_ = Priority::normal;
};

}  // namespace bulwark
