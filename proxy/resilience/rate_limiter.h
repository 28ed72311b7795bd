// Token-bucket rate limiting with GCRA (generic cell rate algorithm): a bucket is one number,
// its "theoretical arrival time" (TAT). Each request moves TAT by one emission interval
// (1/rate); it is allowed while TAT stays within burst intervals of now. Equivalent to a token
// bucket of `burst` tokens refilled at `rate`, with exact arithmetic from a monotonic clock
// and no timer per bucket. The same arithmetic runs in Redis for global limits.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>

#include "config/config.h"

namespace bulwark {

struct RateDecision {
  bool allowed = true;
  std::uint64_t remaining = 0;       // tokens left after this request
  std::uint64_t reset_us = 0;        // until the bucket is full again
  std::uint64_t retry_after_us = 0;  // when denied: until one token is back
};

// One GCRA step. `tat_us` is the bucket's state (0: full); returns the decision and, when
// allowed, the new state in `new_tat_us`.
RateDecision gcra(std::uint64_t tat_us, std::uint64_t now_us, double rate_per_s, double burst,
                  std::uint64_t* new_tat_us);

// The buckets of one route's local limit, shared by every worker without locks: a fixed table
// of slots (key hash, TAT, last use) updated with compare-and-swap. Memory is bounded by the
// table; a bucket whose TAT has passed is full and needs no state, so its slot is free again;
// when a key's probe window is full of live buckets the least recently used one is taken over.
class LocalRateLimiter {
 public:
  static constexpr std::size_t kSlots = 16384;  // keys tracked at once per route
  static constexpr std::size_t kProbe = 8;

  LocalRateLimiter(double rate_per_s, double burst, bool single_key);
  // `share` < 1: this replica's part of a global limit while Redis is out (rate and burst
  // scaled by it, burst at least 1).
  RateDecision decide(std::string_view key, std::uint64_t now_us, double share = 1.0);
  // Buckets that are not full at `now` (for /status).
  std::size_t active_keys(std::uint64_t now_us) const;
  std::uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }

 private:
  struct Slot {
    std::atomic<std::uint64_t> key{0};  // hash; 0 = free
    std::atomic<std::uint64_t> tat{0};
    std::atomic<std::uint64_t> used{0};
  };
  Slot* find(std::uint64_t hash, std::uint64_t now_us);

  const double rate_;
  const double burst_;
  const std::size_t slots_count_;
  std::unique_ptr<Slot[]> slots_;
  std::atomic<std::uint64_t> evictions_{0};
};

std::uint64_t hash_key(std::string_view key);

}  // namespace bulwark
