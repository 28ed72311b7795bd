#include "resilience/circuit_breaker.h"

#include <algorithm>

namespace bulwark {

bool ejection_panics(std::size_t open, std::size_t total, double max_ejected) {
  if (open == 0 || open >= total) return false;
  return static_cast<double>(open) > max_ejected * static_cast<double>(total);
}

const char* breaker_state_name(BreakerState s) {
  switch (s) {
    case BreakerState::closed:
      return "closed";
    case BreakerState::open:
      return "open";
    case BreakerState::half_open:
      return "half_open";
  }
  return "closed";
}

CircuitBreaker::CircuitBreaker(const CircuitBreakerConfig& config, int workers, std::uint64_t seed)
    : config_(config),
      workers_(workers),
      bucket_ms_(std::max<std::uint64_t>(1, config.window_ms / kBuckets)),
      slots_(new Slot[static_cast<std::size_t>(workers)]),
      rng_(seed | 1) {}

bool CircuitBreaker::available(std::uint64_t now_ms) const {
  switch (state()) {
    case BreakerState::closed:
      return true;
    case BreakerState::open:
      return now_ms >= open_until_ms();
    case BreakerState::half_open:
      return permits_.load(std::memory_order_relaxed) < config_.half_open_requests;
  }
  return true;
}

bool CircuitBreaker::try_acquire(std::uint64_t now_ms, ProbeTicket* probe) {
  *probe = 0;
  BreakerState s = state();
  if (s == BreakerState::closed) return true;
  if (s == BreakerState::open && now_ms < open_until_ms()) return false;
  // Half-open (or about to be): probes are few, so they are handed out under the mutex, which
  // ties each permit to its generation.
  std::lock_guard<std::mutex> lock(mutex_);
  if (state() == BreakerState::open && now_ms >= open_until_ms())
    transition_locked(BreakerState::half_open, now_ms);
  if (state() != BreakerState::half_open) return state() == BreakerState::closed;
  if (permits_.load(std::memory_order_relaxed) >= config_.half_open_requests) return false;
  permits_.fetch_add(1, std::memory_order_relaxed);
  *probe = generation_;
  return true;
}

bool CircuitBreaker::health_check_passed(std::uint64_t started_ms, std::uint64_t now_ms) {
  if (!config_.half_open_on_health_check || state() != BreakerState::open) return false;
  std::lock_guard<std::mutex> lock(mutex_);
  // A check already under way when the breaker opened says nothing about what opened it.
  if (state() != BreakerState::open || started_ms < opened_at_ || open_until_ms() <= now_ms)
    return false;
  open_until_.store(now_ms, std::memory_order_release);
  return true;
}

void CircuitBreaker::add_to_window(int worker, bool failure, bool slow, std::uint64_t now_ms) {
  std::uint64_t epoch = now_ms / bucket_ms_;
  Bucket& b = slots_[worker].buckets[epoch % kBuckets];
  // Single writer per slot: plain load/store pairs are enough.
  if (b.epoch.load(std::memory_order_relaxed) != epoch) {
    b.calls.store(0, std::memory_order_relaxed);
    b.failures.store(0, std::memory_order_relaxed);
    b.slow.store(0, std::memory_order_relaxed);
    b.epoch.store(epoch, std::memory_order_release);
  }
  b.calls.store(b.calls.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  if (failure)
    b.failures.store(b.failures.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  if (slow) b.slow.store(b.slow.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

bool CircuitBreaker::window_trips(std::uint64_t now_ms) const {
  std::uint64_t epoch = now_ms / bucket_ms_;
  std::uint64_t oldest = epoch >= kBuckets - 1 ? epoch - (kBuckets - 1) : 0;
  oldest = std::max(oldest, window_reset_epoch_.load(std::memory_order_acquire));
  std::uint64_t calls = 0, failures = 0, slow = 0;
  for (int w = 0; w < workers_; ++w) {
    for (const Bucket& b : slots_[w].buckets) {
      std::uint64_t e = b.epoch.load(std::memory_order_acquire);
      if (e == ~0ull || e < oldest || e > epoch) continue;
      calls += b.calls.load(std::memory_order_relaxed);
      failures += b.failures.load(std::memory_order_relaxed);
      slow += b.slow.load(std::memory_order_relaxed);
    }
  }
  if (calls == 0 || calls < static_cast<std::uint64_t>(config_.min_requests)) return false;
  double n = static_cast<double>(calls);
  if (config_.failure_rate > 0 && static_cast<double>(failures) / n >= config_.failure_rate)
    return true;
  if (config_.slow_call_ms > 0 && config_.slow_call_rate > 0 &&
      static_cast<double>(slow) / n >= config_.slow_call_rate)
    return true;
  return false;
}

void CircuitBreaker::record(int worker, CallResult result, std::uint64_t duration_ms,
                            ProbeTicket probe, std::uint64_t now_ms) {
  bool failure = result == CallResult::failure;
  bool slow = config_.slow_call_ms > 0 && duration_ms >= config_.slow_call_ms;
  if (probe) {
    std::lock_guard<std::mutex> lock(mutex_);
    // A probe of an earlier half-open period: its permit went with that period.
    if (probe != generation_ || state() != BreakerState::half_open) return;
    if (result == CallResult::cancelled) {
      permits_.fetch_sub(1, std::memory_order_relaxed);  // give the probe back
    } else if (failure || slow) {
      open_locked(now_ms);
    } else if (++probe_successes_ >= config_.half_open_requests) {
      transition_locked(BreakerState::closed, now_ms);
    }
    return;
  }
  if (result == CallResult::cancelled) return;
  if (state() != BreakerState::closed) return;  // a call that started before the trip
  add_to_window(worker, failure, slow, now_ms);
  bool trip = false;
  if (failure) {
    int streak = consecutive_.fetch_add(1, std::memory_order_acq_rel) + 1;
    trip = config_.consecutive_failures > 0 && streak >= config_.consecutive_failures;
  } else if (consecutive_.load(std::memory_order_relaxed) != 0) {
    consecutive_.store(0, std::memory_order_relaxed);
  }
  // Rates can only have crossed their threshold on a failing or slow call.
  if (!trip && (failure || slow)) trip = window_trips(now_ms);
  if (!trip) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (state() == BreakerState::closed) open_locked(now_ms);
}

std::uint64_t CircuitBreaker::jitter(std::uint64_t ms) {
  rng_ ^= rng_ >> 12;
  rng_ ^= rng_ << 25;
  rng_ ^= rng_ >> 27;
  double u = static_cast<double>((rng_ * 0x2545f4914f6cdd1dull) >> 11) / 9007199254740992.0;
  return static_cast<std::uint64_t>(static_cast<double>(ms) * (0.9 + 0.2 * u));
}

void CircuitBreaker::open_locked(std::uint64_t now_ms) {
  bool reopen = state() == BreakerState::half_open;
  if (reopen)
    ++reopens_;
  else
    reopens_ = 0;
  std::uint64_t duration = config_.open_for_ms;
  for (int i = 0; i < reopens_ && duration < config_.max_open_for_ms; ++i) duration *= 2;
  duration = std::min(duration, config_.max_open_for_ms);
  open_until_.store(now_ms + jitter(duration), std::memory_order_release);
  opened_at_ = now_ms;
  transition_locked(BreakerState::open, now_ms);
}

void CircuitBreaker::transition_locked(BreakerState to, std::uint64_t now_ms) {
  BreakerState from = state();
  if (to == BreakerState::half_open) {
    ++generation_;  // probes still out from an earlier period no longer count
    permits_.store(0, std::memory_order_release);
    probe_successes_ = 0;
  }
  if (to == BreakerState::closed) {
    consecutive_.store(0, std::memory_order_release);
    open_until_.store(0, std::memory_order_release);
    reopens_ = 0;
    // Counts restart: only calls from now on form the window.
    window_reset_epoch_.store(now_ms / bucket_ms_, std::memory_order_release);
  }
  if (to == BreakerState::open) consecutive_.store(0, std::memory_order_release);
  state_.store(static_cast<int>(to), std::memory_order_release);
  transitions_[static_cast<int>(to)].fetch_add(1, std::memory_order_relaxed);
  if (on_transition) {
    std::uint64_t until = open_until_.load(std::memory_order_relaxed);
    on_transition(from, to, to == BreakerState::open && until > now_ms ? until - now_ms : 0);
  }
}

}  // namespace bulwark
