#include "resilience/circuit_breaker.h"

#include <doctest/doctest.h>

#include <vector>

using namespace bulwark;

namespace {

CircuitBreakerConfig config() {
  CircuitBreakerConfig c;
  c.consecutive_failures = 3;
  c.failure_rate = 0.5;
  c.window_ms = 10000;
  c.min_requests = 10;
  c.open_for_ms = 1000;
  c.max_open_for_ms = 5000;
  c.half_open_requests = 2;
  return c;
}

// Runs one call through the breaker at `now`; returns whether it was admitted.
bool call(CircuitBreaker& b, std::uint64_t now, CallResult result, std::uint64_t duration = 1,
          int worker = 0) {
  ProbeTicket probe = 0;
  if (!b.try_acquire(now, &probe)) return false;
  b.record(worker, result, duration, probe, now);
  return true;
}

}  // namespace

TEST_CASE("consecutive failures trip the breaker; a success resets the streak") {
  CircuitBreaker b(config(), 2, 1);
  std::uint64_t t = 1000;
  CHECK(call(b, t, CallResult::failure));
  CHECK(call(b, t, CallResult::failure));
  CHECK(call(b, t, CallResult::success));  // streak broken
  CHECK(call(b, t, CallResult::failure, 1, 1));
  CHECK(call(b, t, CallResult::failure, 1, 0));
  CHECK(b.state() == BreakerState::closed);
  CHECK(call(b, t, CallResult::failure, 1, 1));  // third in a row, across workers
  CHECK(b.state() == BreakerState::open);
  CHECK_FALSE(call(b, t + 1, CallResult::success));
  CHECK(b.transitions_to(BreakerState::open) == 1);
}

TEST_CASE("open lasts open_for with jitter, then half-open admits exactly the probes") {
  CircuitBreaker b(config(), 1, 7);
  std::uint64_t t = 5000;
  for (int i = 0; i < 3; ++i) call(b, t, CallResult::failure);
  REQUIRE(b.state() == BreakerState::open);
  std::uint64_t until = b.open_until_ms();
  CHECK(until >= t + 900);
  CHECK(until <= t + 1100);
  CHECK_FALSE(b.available(until - 1));
  CHECK(b.available(until));

  ProbeTicket p1 = 0, p2 = 0, p3 = 0;
  CHECK(b.try_acquire(until, &p1));
  CHECK(b.state() == BreakerState::half_open);
  CHECK(b.try_acquire(until, &p2));
  CHECK_FALSE(b.try_acquire(until, &p3));  // only half_open_requests probes
  CHECK((p1 && p2));
  CHECK_FALSE(b.available(until));
  b.record(0, CallResult::success, 1, p1, until + 5);
  CHECK(b.state() == BreakerState::half_open);
  b.record(0, CallResult::success, 1, p2, until + 6);
  CHECK(b.state() == BreakerState::closed);  // all probes succeeded
  CHECK(b.transitions_to(BreakerState::closed) == 1);
  // Counts were reset: two failures do not trip.
  call(b, until + 10, CallResult::failure);
  call(b, until + 10, CallResult::failure);
  CHECK(b.state() == BreakerState::closed);
}

TEST_CASE("a health check that started after the trip ends the open period early") {
  CircuitBreaker b(config(), 1, 7);
  std::uint64_t t = 5000;
  for (int i = 0; i < 3; ++i) call(b, t, CallResult::failure);
  REQUIRE(b.state() == BreakerState::open);
  std::uint64_t until = b.open_until_ms();
  // A check already under way when the breaker opened changes nothing.
  CHECK_FALSE(b.health_check_passed(t - 1, t + 100));
  CHECK_FALSE(b.available(t + 100));
  // One that started after it did: the next request half-opens the breaker and probes.
  CHECK(b.health_check_passed(t + 200, t + 210));
  CHECK(b.available(t + 210));
  CHECK(b.open_until_ms() == t + 210);
  CHECK(b.open_until_ms() < until);
  ProbeTicket p = 0;
  CHECK(b.try_acquire(t + 220, &p));
  CHECK(b.state() == BreakerState::half_open);
  CHECK(p != 0);
  // Half-open or closed: a passing check has nothing to end.
  CHECK_FALSE(b.health_check_passed(t + 230, t + 240));
  // A failed probe re-opens for twice open_for; a later passing check ends that early too.
  b.record(0, CallResult::failure, 1, p, t + 250);
  REQUIRE(b.state() == BreakerState::open);
  CHECK(b.open_until_ms() >= t + 250 + 1800);
  CHECK_FALSE(b.health_check_passed(t + 220, t + 300));  // started before the re-open
  CHECK(b.health_check_passed(t + 260, t + 300));
  CHECK(b.available(t + 300));
}

TEST_CASE("half_open_on_health_check: false keeps the breaker open for its whole period") {
  CircuitBreakerConfig c = config();
  c.half_open_on_health_check = false;
  CircuitBreaker b(c, 1, 7);
  for (int i = 0; i < 3; ++i) call(b, 5000, CallResult::failure);
  REQUIRE(b.state() == BreakerState::open);
  CHECK_FALSE(b.health_check_passed(5100, 5110));
  CHECK_FALSE(b.available(5110));
}

TEST_CASE("a failed probe re-opens for twice as long, capped at max_open_for") {
  CircuitBreakerConfig c = config();
  CircuitBreaker b(c, 1, 3);
  std::uint64_t t = 0;
  for (int i = 0; i < 3; ++i) call(b, t, CallResult::failure);
  std::vector<std::uint64_t> durations;
  for (int round = 0; round < 5; ++round) {
    std::uint64_t until = b.open_until_ms();
    durations.push_back(until - t);
    t = until;
    ProbeTicket probe = 0;
    REQUIRE(b.try_acquire(t, &probe));
    REQUIRE(probe);
    b.record(0, CallResult::failure, 1, probe, t);
    REQUIRE(b.state() == BreakerState::open);
  }
  // 1s, 2s, 4s, then the 5s cap, each within +/-10 %.
  std::uint64_t expected[] = {1000, 2000, 4000, 5000, 5000};
  for (int i = 0; i < 5; ++i) {
    CAPTURE(i);
    CHECK(durations[static_cast<std::size_t>(i)] >= expected[i] * 9 / 10);
    CHECK(durations[static_cast<std::size_t>(i)] <= expected[i] * 11 / 10);
  }
  CHECK(b.reopen_count() == 5);
}

TEST_CASE("a cancelled probe gives its permit back") {
  CircuitBreaker b(config(), 1, 5);
  for (int i = 0; i < 3; ++i) call(b, 0, CallResult::failure);
  std::uint64_t t = b.open_until_ms();
  ProbeTicket p = 0;
  REQUIRE(b.try_acquire(t, &p));
  REQUIRE(b.try_acquire(t, &p));
  CHECK_FALSE(b.available(t));
  b.record(0, CallResult::cancelled, 0, p, t);
  CHECK(b.available(t));
  CHECK(b.probes_in_flight() == 1);
}

namespace {
// Trips `b` (3 failures at 0) and opens a half-open period with two probes taken; the second
// fails, so the breaker is open again while the first is still in flight. Returns the first.
ProbeTicket strand_a_probe(CircuitBreaker& b) {
  for (int i = 0; i < 3; ++i) call(b, 0, CallResult::failure);
  std::uint64_t t = b.open_until_ms();
  ProbeTicket first = 0, second = 0;
  REQUIRE(b.try_acquire(t, &first));
  REQUIRE(b.try_acquire(t, &second));
  b.record(0, CallResult::failure, 1, second, t);
  REQUIRE(b.state() == BreakerState::open);
  return first;
}
}  // namespace

TEST_CASE("a probe from an earlier half-open period does not count in the next one") {
  CircuitBreaker b(config(), 1, 19);
  ProbeTicket stale = strand_a_probe(b);
  std::uint64_t t = b.open_until_ms();
  ProbeTicket q1 = 0, q2 = 0;
  REQUIRE(b.try_acquire(t, &q1));
  REQUIRE(b.try_acquire(t, &q2));
  CHECK(q1 != stale);
  b.record(0, CallResult::success, 1, stale, t + 1);  // late success of the stranded probe
  b.record(0, CallResult::success, 1, q1, t + 2);
  CHECK(b.state() == BreakerState::half_open);  // one real probe of two so far
  b.record(0, CallResult::success, 1, q2, t + 3);
  CHECK(b.state() == BreakerState::closed);
}

TEST_CASE("a stale probe's failure does not re-open the next half-open period") {
  CircuitBreaker b(config(), 1, 23);
  ProbeTicket stale = strand_a_probe(b);
  std::uint64_t t = b.open_until_ms();
  ProbeTicket q1 = 0;
  REQUIRE(b.try_acquire(t, &q1));
  b.record(0, CallResult::failure, 1, stale, t + 1);
  CHECK(b.state() == BreakerState::half_open);
  CHECK(b.transitions_to(BreakerState::open) == 2);
}

TEST_CASE("a cancelled stale probe gives back no permit of the next period") {
  CircuitBreaker b(config(), 1, 29);
  ProbeTicket stale = strand_a_probe(b);
  std::uint64_t t = b.open_until_ms();
  ProbeTicket q = 0;
  REQUIRE(b.try_acquire(t, &q));
  b.record(0, CallResult::cancelled, 0, stale, t);  // the stranded probe's client went away
  CHECK(b.probes_in_flight() == 1);
  REQUIRE(b.try_acquire(t, &q));
  CHECK_FALSE(b.try_acquire(t, &q));  // still exactly half_open_requests probes
  CHECK(b.probes_in_flight() == 2);
}

TEST_CASE("a stale probe cancelled while the breaker is open leaves the count alone") {
  CircuitBreaker b(config(), 1, 31);
  ProbeTicket stale = strand_a_probe(b);
  b.record(0, CallResult::cancelled, 0, stale, b.open_until_ms() - 1);
  std::uint64_t t = b.open_until_ms();
  ProbeTicket q = 0;
  REQUIRE(b.try_acquire(t, &q));
  REQUIRE(b.try_acquire(t, &q));
  CHECK_FALSE(b.try_acquire(t, &q));
}

TEST_CASE("failure rate over the window trips once min_requests were seen") {
  CircuitBreakerConfig c = config();
  c.consecutive_failures = 0;  // rate only
  CircuitBreaker b(c, 2, 9);
  std::uint64_t t = 100000;
  // Alternate: 50 % failures, never two in a row.
  for (int i = 0; i < 9; ++i)
    call(b, t + static_cast<std::uint64_t>(i), i % 2 ? CallResult::failure : CallResult::success, 1,
         i % 2);
  CHECK(b.state() == BreakerState::closed);  // 9 calls < min_requests
  call(b, t + 9, CallResult::failure);
  CHECK(b.state() == BreakerState::open);  // 5 of 10 failed
}

TEST_CASE("the window rolls over: old failures stop counting") {
  CircuitBreakerConfig c = config();
  c.consecutive_failures = 0;
  CircuitBreaker b(c, 1, 11);
  std::uint64_t t = 50000;
  for (int i = 0; i < 8; ++i) call(b, t, CallResult::failure);  // 8 failures, below min_requests
  CHECK(b.state() == BreakerState::closed);
  t += 11000;  // a whole window later
  for (int i = 0; i < 10; ++i) call(b, t, i < 4 ? CallResult::failure : CallResult::success);
  // Only the last 10 calls count: 4 failures = 40 % < 50 %.
  CHECK(b.state() == BreakerState::closed);
  call(b, t, CallResult::failure);
  call(b, t, CallResult::failure);  // 6 of 12 = 50 %
  CHECK(b.state() == BreakerState::open);
}

TEST_CASE("slow calls trip on their own rate") {
  CircuitBreakerConfig c = config();
  c.consecutive_failures = 0;
  c.slow_call_ms = 200;
  c.slow_call_rate = 0.8;
  CircuitBreaker b(c, 1, 13);
  std::uint64_t t = 1000;
  for (int i = 0; i < 7; ++i) call(b, t, CallResult::success, 500);
  for (int i = 0; i < 2; ++i) call(b, t, CallResult::success, 10);
  CHECK(b.state() == BreakerState::closed);  // 9 calls
  call(b, t, CallResult::success, 10);
  CHECK(b.state() == BreakerState::closed);  // 7 of 10 slow = 70 %
  for (int i = 0; i < 4; ++i) call(b, t, CallResult::success, 900);
  CHECK(b.state() == BreakerState::closed);  // 11 of 14 = 79 %
  call(b, t, CallResult::success, 900);
  CHECK(b.state() == BreakerState::open);  // 12 of 15 = 80 %
}

TEST_CASE("calls that started before a trip do not count afterwards") {
  CircuitBreaker b(config(), 1, 17);
  for (int i = 0; i < 3; ++i) call(b, 0, CallResult::failure);
  REQUIRE(b.state() == BreakerState::open);
  b.record(0, CallResult::failure, 1, 0, 10);  // late result of an earlier call
  CHECK(b.transitions_to(BreakerState::open) == 1);
}

TEST_CASE("panic mode: more than max_ejected open, but not all") {
  CHECK_FALSE(ejection_panics(0, 3, 0.5));
  CHECK_FALSE(ejection_panics(1, 3, 0.5));  // 33 %
  CHECK(ejection_panics(2, 3, 0.5));        // 67 % > 50 %
  CHECK_FALSE(ejection_panics(3, 3, 0.5));  // all open: fail fast instead
  CHECK_FALSE(ejection_panics(1, 2, 0.5));  // exactly 50 %
  CHECK(ejection_panics(1, 10, 0.0));
  CHECK_FALSE(ejection_panics(9, 10, 1.0));
}
