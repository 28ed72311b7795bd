// One circuit breaker per upstream endpoint, shared by every worker.
//
// CLOSED: requests flow; it trips to OPEN after `consecutive_failures` failures in a row, or
// when, over the sliding `window` and with at least `min_requests` seen, the failure rate
// reaches `failure_rate` or the slow-call rate reaches `slow_call.rate`.
// OPEN: no requests for open_for x 2^(re-opens), capped at max_open_for, +/-10 % jitter.
// A passing active health check that started after the breaker opened cuts OPEN short.
// HALF_OPEN: exactly `half_open_requests` probes go through; all succeed -> CLOSED (counts
// reset), any fails -> OPEN again with the longer duration. Each half-open period is a new
// generation and every probe permit carries the generation it was taken in: a probe that
// outlives its period (still in flight when another probe re-opened the breaker) neither
// counts toward a later period nor gives back a permit of it.
//
// Hot path in CLOSED: one relaxed load to decide, and on completion a few stores into the
// calling worker's own window slot (single writer) plus one atomic for the failure streak.
// Transitions take a mutex; they are rare. Time is passed in (milliseconds, monotonic), so
// tests drive it with a fake clock.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "config/config.h"

namespace bulwark {

enum class BreakerState : int { closed = 0, open = 1, half_open = 2 };
const char* breaker_state_name(BreakerState s);

enum class CallResult { success, failure, cancelled };

// A half-open probe permit: the generation (half-open period) it was taken in; 0 when the
// call is not a probe.
using ProbeTicket = std::uint64_t;

// Panic mode: when more than `max_ejected` of an upstream's endpoints are open (but not all
// of them), the open ones take traffic again rather than overloading the few left. When all
// are open, requests fail fast instead (503 circuit-open).
bool ejection_panics(std::size_t open, std::size_t total, double max_ejected);

class CircuitBreaker {
 public:
  // `workers`: number of window slots (one per worker thread). `seed`: jitter.
  CircuitBreaker(const CircuitBreakerConfig& config, int workers, std::uint64_t seed);

  // May a request go to this endpoint now? For HALF_OPEN this takes a probe permit
  // (`*probe` set to its ticket, else 0); the caller must report the call with
  // record(..., probe).
  bool try_acquire(std::uint64_t now_ms, ProbeTicket* probe);
  // An active health check that started at `started_ms` passed at `now_ms`. If the breaker
  // was opened before that check started (and half_open_on_health_check is on), its open
  // period ends now: the next request half-opens it. True when it did.
  bool health_check_passed(std::uint64_t started_ms, std::uint64_t now_ms);
  // Without taking anything: would try_acquire let a request through now?
  bool available(std::uint64_t now_ms) const;
  // The outcome of a call admitted by try_acquire. `worker` is the caller's slot; `probe` the
  // ticket try_acquire gave (0: not a probe).
  void record(int worker, CallResult result, std::uint64_t duration_ms, ProbeTicket probe,
              std::uint64_t now_ms);

  BreakerState state() const {
    return static_cast<BreakerState>(state_.load(std::memory_order_acquire));
  }
  // When OPEN: when it may half-open (ms, same clock); else 0.
  std::uint64_t open_until_ms() const { return open_until_.load(std::memory_order_acquire); }
  std::uint64_t transitions_to(BreakerState s) const {
    return transitions_[static_cast<int>(s)].load(std::memory_order_relaxed);
  }
  int reopen_count() const { return reopens_; }
  // Probe permits handed out in the current HALF_OPEN period (for tests and /status).
  int probes_in_flight() const { return permits_.load(std::memory_order_relaxed); }
  // Called after every transition (from the thread that made it), e.g. to log.
  std::function<void(BreakerState from, BreakerState to, std::uint64_t open_ms)> on_transition;

 private:
  struct Bucket {
    std::atomic<std::uint64_t> epoch{~0ull};
    std::atomic<std::uint32_t> calls{0};
    std::atomic<std::uint32_t> failures{0};
    std::atomic<std::uint32_t> slow{0};
  };
  static constexpr int kBuckets = 10;
  struct alignas(64) Slot {
    Bucket buckets[kBuckets];
  };

  void add_to_window(int worker, bool failure, bool slow, std::uint64_t now_ms);
  bool window_trips(std::uint64_t now_ms) const;
  void open_locked(std::uint64_t now_ms);
  void transition_locked(BreakerState to, std::uint64_t now_ms);
  std::uint64_t jitter(std::uint64_t ms);

  const CircuitBreakerConfig config_;
  const int workers_;
  const std::uint64_t bucket_ms_;
  std::unique_ptr<Slot[]> slots_;
  std::atomic<int> state_{0};
  std::atomic<std::uint64_t> open_until_{0};
  std::uint64_t opened_at_ = 0;  // when it last went OPEN; guarded by mutex_
  std::atomic<int> consecutive_{0};
  std::atomic<int> permits_{0};  // probes handed out in this HALF_OPEN period, not yet back
  int probe_successes_ = 0;      // guarded by mutex_
  ProbeTicket generation_ = 0;   // of the current (or last) HALF_OPEN period; guarded by mutex_
  std::atomic<std::uint64_t> window_reset_epoch_{0};  // buckets older than this are ignored
  std::atomic<std::uint64_t> transitions_[3] = {};
  std::mutex mutex_;
  int reopens_ = 0;    // guarded by mutex_
  std::uint64_t rng_;  // guarded by mutex_
};

}  // namespace bulwark
