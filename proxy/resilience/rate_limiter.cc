#include "resilience/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace bulwark {

RateDecision gcra(std::uint64_t tat_us, std::uint64_t now_us, double rate_per_s, double burst,
                  std::uint64_t* new_tat_us) {
  const double interval = 1e6 / rate_per_s;   // microseconds per token
  const double tolerance = interval * burst;  // a full bucket
  double tat = static_cast<double>(std::max(tat_us, now_us));
  double next = tat + interval;
  double now = static_cast<double>(now_us);
  RateDecision d;
  if (next - now > tolerance + 1e-6) {
    d.allowed = false;
    d.remaining = 0;
    d.reset_us = static_cast<std::uint64_t>(tat - now);
    d.retry_after_us = static_cast<std::uint64_t>(std::ceil(next - tolerance - now));
    *new_tat_us = static_cast<std::uint64_t>(tat);
    return d;
  }
  *new_tat_us = static_cast<std::uint64_t>(std::llround(next));
  d.allowed = true;
  d.remaining =
      static_cast<std::uint64_t>(std::floor((tolerance - (next - now)) / interval + 1e-9));
  d.reset_us = static_cast<std::uint64_t>(next - now);
  return d;
}

std::uint64_t hash_key(std::string_view key) {
  // FNV-1a, then a finalizer so that similar keys spread over the table.
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h ? h : 1;
}

LocalRateLimiter::LocalRateLimiter(double rate_per_s, double burst, bool single_key)
    : rate_(rate_per_s),
      burst_(burst),
      slots_count_(single_key ? 1 : kSlots),
      slots_(new Slot[single_key ? 1 : kSlots]) {}

LocalRateLimiter::Slot* LocalRateLimiter::find(std::uint64_t hash, std::uint64_t now_us) {
  std::size_t start = static_cast<std::size_t>(hash % slots_count_);
  std::size_t probe = std::min(kProbe, slots_count_);
  Slot* victim = nullptr;
  std::uint64_t victim_used = ~0ull;
  for (std::size_t i = 0; i < probe; ++i) {
    Slot& s = slots_[(start + i) % slots_count_];
    std::uint64_t k = s.key.load(std::memory_order_acquire);
    if (k == hash) return &s;
    // A free slot, or one whose bucket is full again (its state says nothing): reusable.
    bool reusable = k == 0 || s.tat.load(std::memory_order_relaxed) <= now_us;
    std::uint64_t used = reusable ? 0 : s.used.load(std::memory_order_relaxed);
    if (used < victim_used) {
      victim = &s;
      victim_used = used;
    }
  }
  // Take over the best candidate; if another worker got there first, use whatever it holds.
  std::uint64_t expected = victim->key.load(std::memory_order_acquire);
  if (expected == hash) return victim;
  if (victim->key.compare_exchange_strong(expected, hash, std::memory_order_acq_rel)) {
    if (victim_used != 0) evictions_.fetch_add(1, std::memory_order_relaxed);
    victim->tat.store(0, std::memory_order_release);  // a new key starts with a full bucket
  }
  return victim;
}

RateDecision LocalRateLimiter::decide(std::string_view key, std::uint64_t now_us, double share) {
  const double rate = share < 1.0 ? rate_ * share : rate_;
  const double burst = share < 1.0 ? std::max(1.0, burst_ * share) : burst_;
  Slot* s = find(slots_count_ == 1 ? 1 : hash_key(key), now_us);
  s->used.store(now_us, std::memory_order_relaxed);
  std::uint64_t tat = s->tat.load(std::memory_order_acquire);
  for (;;) {
    std::uint64_t next = 0;
    RateDecision d = gcra(tat, now_us, rate, burst, &next);
    if (!d.allowed) return d;
    if (s->tat.compare_exchange_weak(tat, next, std::memory_order_acq_rel)) return d;
  }
}

std::size_t LocalRateLimiter::active_keys(std::uint64_t now_us) const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < slots_count_; ++i)
    n += slots_[i].key.load(std::memory_order_relaxed) != 0 &&
         slots_[i].tat.load(std::memory_order_relaxed) > now_us;
  return n;
}

}  // namespace bulwark
