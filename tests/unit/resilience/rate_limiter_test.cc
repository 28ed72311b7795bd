#include "resilience/rate_limiter.h"

#include <doctest/doctest.h>

#include <string>

using namespace bulwark;

namespace {
// Requests admitted when `per_second` arrive evenly for `seconds` from one key.
int admitted(LocalRateLimiter& l, std::uint64_t start_us, double per_second, double seconds,
             const std::string& key = "k") {
  int n = 0;
  auto total = static_cast<int>(per_second * seconds);
  for (int i = 0; i < total; ++i) {
    auto t = start_us + static_cast<std::uint64_t>(i * 1e6 / per_second);
    n += l.decide(key, t).allowed;
  }
  return n;
}
}  // namespace

TEST_CASE("GCRA: a full bucket admits burst at once, then refills at rate") {
  std::uint64_t tat = 0, next = 0;
  std::uint64_t now = 1'000'000;
  int allowed = 0;
  for (int i = 0; i < 15; ++i) {
    RateDecision d = gcra(tat, now, 50, 10, &next);
    if (d.allowed) {
      ++allowed;
      tat = next;
      CHECK(d.remaining == static_cast<std::uint64_t>(10 - allowed));
    } else {
      CHECK(d.retry_after_us == 20'000);  // one token every 20 ms at 50/s
    }
  }
  CHECK(allowed == 10);
  // 20 ms later exactly one more.
  RateDecision d = gcra(tat, now + 20'000, 50, 10, &next);
  CHECK(d.allowed);
  CHECK(d.remaining == 0);
  CHECK_FALSE(gcra(next, now + 20'000, 50, 10, &next).allowed);
}

TEST_CASE("GCRA: reset is the time until the bucket is full again") {
  std::uint64_t next = 0;
  RateDecision d = gcra(0, 5'000'000, 10, 5, &next);  // one token used of 5, 10/s
  CHECK(d.allowed);
  CHECK(d.remaining == 4);
  CHECK(d.reset_us == 100'000);
}

TEST_CASE("local bucket: 50/s burst 10 for 3 s admits 160 of a 100/s stream") {
  LocalRateLimiter l(50, 10, false);
  int n = admitted(l, 10'000'000, 100, 3);
  CHECK(n >= 158);
  CHECK(n <= 161);  // 10 + 50 * 3, give or take the last interval
}

TEST_CASE("local bucket: fractional rates") {
  LocalRateLimiter l(0.5, 1, false);  // one every two seconds
  std::uint64_t t = 1'000'000'000;
  CHECK(l.decide("a", t).allowed);
  CHECK_FALSE(l.decide("a", t + 1'900'000).allowed);
  CHECK(l.decide("a", t + 2'000'000).allowed);
  RateDecision d = l.decide("a", t + 2'000'001);
  CHECK_FALSE(d.allowed);
  CHECK(d.retry_after_us == 1'999'999);
}

TEST_CASE("local bucket: keys are independent") {
  LocalRateLimiter l(1, 2, false);
  std::uint64_t t = 42'000'000;
  CHECK(l.decide("a", t).allowed);
  CHECK(l.decide("a", t).allowed);
  CHECK_FALSE(l.decide("a", t).allowed);
  CHECK(l.decide("b", t).allowed);
  CHECK(l.decide("", t).allowed);  // the anonymous bucket
}

TEST_CASE("local bucket: a spray of keys is bounded; idle buckets free their slots") {
  LocalRateLimiter l(1, 1, false);
  std::uint64_t t = 77'000'000;
  for (int i = 0; i < 100000; ++i) l.decide("key-" + std::to_string(i), t);
  CHECK(l.active_keys(t) <= LocalRateLimiter::kSlots);
  CHECK(l.evictions() > 0);  // least recently used buckets were taken over
  // A second later every bucket is full again: nothing needs to be kept.
  CHECK(l.active_keys(t + 1'000'000) == 0);
  // A key that was evicted simply starts with a full bucket.
  CHECK(l.decide("key-0", t + 1).allowed);
}

TEST_CASE("local bucket: route key is one bucket") {
  LocalRateLimiter l(10, 3, true);
  std::uint64_t t = 9'000'000;
  CHECK(l.decide("x", t).allowed);
  CHECK(l.decide("y", t).allowed);
  CHECK(l.decide("z", t).allowed);
  CHECK_FALSE(l.decide("w", t).allowed);
}
