// Load shedding: the process-wide limit and its accounting (LoadShedder) and the worker's
// priority queue with CoDel waits and adaptive LIFO (ShedQueue, on a fake clock). The gate
// that ties them to a loop is in shed_gate_test.cc.
#include <doctest/doctest.h>

#include <string>
#include <thread>
#include <vector>

#include "resilience/load_shedder.h"
#include "resilience/shed_queue.h"
#include "resilience/shedding_fixture.h"

using namespace bulwark;
using test::aimd_limit;
using test::fixed_limit;
using test::Waiter;

TEST_CASE("priority names: critical, normal, sheddable; anything else is normal") {
  CHECK(parse_priority("critical") == Priority::critical);
  CHECK(parse_priority("CRITICAL") == Priority::critical);
  CHECK(parse_priority("Sheddable") == Priority::sheddable);
  CHECK(parse_priority("normal") == Priority::normal);
  CHECK(parse_priority("") == Priority::normal);
  CHECK(parse_priority("urgent") == Priority::normal);
  CHECK(parse_priority("critical ") == Priority::normal);
  CHECK(std::string(priority_name(Priority::sheddable)) == "sheddable");
}

TEST_CASE("shedder: admission is exact at the limit; release frees a unit") {
  LoadShedder s(fixed_limit(3), 2);
  CHECK(s.limit() == 3);
  for (int i = 0; i < 3; ++i) CHECK(s.try_acquire(Priority::normal, 0));
  CHECK_FALSE(s.try_acquire(Priority::normal, 0));
  CHECK_FALSE(s.try_acquire(Priority::critical, 0));
  CHECK(s.in_flight() == 3);
  s.release(Priority::normal);
  CHECK(s.try_acquire(Priority::sheddable, 0));
  CHECK(s.in_flight() == 3);
}

TEST_CASE("shedder: workers racing for the last units never exceed the limit") {
  // Two threads take and give back units as fast as they can; neither may ever see more in
  // flight than the limit (a check-then-increment would).
  LoadShedder s(fixed_limit(4), 2);
  std::atomic<std::int64_t> worst{0};
  auto hammer = [&] {
    for (int i = 0; i < 200000; ++i) {
      if (!s.try_acquire(Priority::normal, 0)) continue;
      std::int64_t now = s.in_flight();
      std::int64_t w = worst.load();
      while (now > w && !worst.compare_exchange_weak(w, now)) {
      }
      s.release(Priority::normal);
    }
  };
  std::thread a(hammer), b(hammer);
  a.join();
  b.join();
  CHECK(worst.load() <= 4);
  CHECK(s.in_flight() == 0);
}

TEST_CASE("shedder: the critical reserve binds only at the limit and only with critical traffic") {
  LoadSheddingConfig c = fixed_limit(10);
  c.critical_reserve = 0.2;  // 2 units
  LoadShedder s(c, 1);
  // No critical traffic: the whole limit is open to everyone.
  for (int i = 0; i < 10; ++i) CHECK(s.try_acquire(Priority::sheddable, 1000));
  for (int i = 0; i < 10; ++i) s.release(Priority::sheddable);
  CHECK(s.critical_reserve(1000) == 0);

  s.saw_critical(1000);
  CHECK(s.critical_reserve(1500) == 2);
  // Below limit - reserve, every priority goes; the last two units wait for critical.
  for (int i = 0; i < 8; ++i) CHECK(s.try_acquire(Priority::normal, 1500));
  CHECK_FALSE(s.try_acquire(Priority::normal, 1500));
  CHECK_FALSE(s.try_acquire(Priority::sheddable, 1500));
  CHECK(s.try_acquire(Priority::critical, 1500));
  CHECK(s.try_acquire(Priority::critical, 1500));
  CHECK_FALSE(s.try_acquire(Priority::critical, 1500));  // the limit itself binds critical too
  CHECK(s.critical_in_flight() == 2);
  // Critical requests that hold their reserve leave the rest to the others.
  s.release(Priority::normal);
  CHECK(s.try_acquire(Priority::normal, 1500));
  // Once critical traffic has been gone for a second, the reserve is open again.
  s.release(Priority::critical);
  s.release(Priority::critical);
  s.release(Priority::normal);
  CHECK(s.try_acquire(Priority::normal, 2100));
  CHECK(s.try_acquire(Priority::normal, 2100));
  CHECK(s.try_acquire(Priority::normal, 2100));
  CHECK(s.in_flight() == 10);
}

TEST_CASE("shedder: the critical reserve never takes the whole limit") {
  LoadSheddingConfig c = fixed_limit(1);
  c.critical_reserve = 0.5;
  LoadShedder s(c, 1);
  s.saw_critical(0);
  CHECK(s.critical_reserve(10) == 0);  // ceil(0.5) would be the one unit there is
  CHECK(s.try_acquire(Priority::normal, 10));
  CHECK(s.critical_presence_until_ms() == 1001);
}

TEST_CASE("shedder: the reserve is open at the time critical_presence_until_ms names") {
  LoadSheddingConfig c = fixed_limit(10);
  c.critical_reserve = 0.1;
  LoadShedder s(c, 1);
  s.saw_critical(500);
  const std::uint64_t until = s.critical_presence_until_ms();
  CHECK(s.critical_reserve(until - 1) == 1);
  CHECK(s.critical_reserve(until) == 0);  // a queue timer set for `until` finds it open
}

TEST_CASE("shedder: samples move the limit; a worker that finds the feeder busy feeds later") {
  LoadShedder s(aimd_limit(10, 100), 2);
  CHECK(std::string(s.algorithm()) == "aimd");
  std::uint64_t now = 1'000'000;
  // A drop backs the limit off x0.9.
  s.sample(0, now, 1000, 10, true);
  CHECK(s.limit() == 9);
  // 9 successes pressing the limit grow it by one.
  for (int i = 0; i < 9; ++i) s.sample(1, now += 1000, 1000, 9, false);
  CHECK(s.limit() == 10);
}

TEST_CASE("shedder: the RTT window publishes min and average once a second") {
  LoadShedder s(fixed_limit(10), 1);
  CHECK(s.recent_rtt().samples == 0);
  std::uint64_t t = 5'000'000;
  s.sample(0, t, 2000, 1, false);
  s.sample(0, t + 100'000, 4000, 1, false);
  s.sample(0, t + 200'000, 9000, 1, true);  // a drop is not a latency
  CHECK(s.recent_rtt().samples == 0);        // the window is not complete yet
  s.sample(0, t + 1'000'000, 1000, 1, false);
  LoadShedder::RttWindow w = s.recent_rtt();
  CHECK(w.samples == 2);
  CHECK(w.min_us == 2000);
  CHECK(w.avg_us == 3000);
}

TEST_CASE("shed queue: higher priority first, FIFO while the queue is not standing") {
  ShedQueue q(50);
  Waiter a("a"), b("b"), c("c"), d("d");
  q.push(a, Priority::normal, 0);
  q.push(b, Priority::sheddable, 1);
  q.push(c, Priority::normal, 2);
  q.push(d, Priority::critical, 3);
  CHECK(q.size() == 4);
  CHECK(q.head_priority() == Priority::critical);
  CHECK(q.pop(4) == &d);
  CHECK(q.pop(4) == &a);
  CHECK(q.pop(4) == &c);
  CHECK(q.pop(4) == &b);
  CHECK(q.pop(4) == nullptr);
  CHECK(q.empty());
}

TEST_CASE("shed queue: a standing queue serves newest first and shortens the wait (CoDel)") {
  ShedQueue q(50, 5, 100);
  Waiter a("a"), b("b"), c("c"), d("d");
  q.admitted_at_once(0);  // the last request that got a unit without waiting
  q.push(a, Priority::normal, 0);
  CHECK_FALSE(q.standing(99));
  CHECK(q.allowed_wait_ms(10, Priority::normal) == 50);
  // The next event is a's deadline (50), before the queue would turn standing (100).
  CHECK(q.next_deadline_ms(10) == 50);
  q.push(b, Priority::normal, 98);
  CHECK(q.standing(100));
  CHECK(q.allowed_wait_ms(100, Priority::normal) == 5);
  CHECK(q.allowed_wait_ms(100, Priority::sheddable) == 5);
  CHECK(q.allowed_wait_ms(100, Priority::critical) == 50);  // critical keeps the whole wait
  q.push(c, Priority::normal, 101);
  // Newest first while standing (a pop that hides the queue's age: no good sign).
  CHECK(q.pop(102) == &c);
  CHECK(q.standing(102));
  CHECK(q.pop_expired(102) == &a);  // long past the target
  CHECK(q.pop_expired(102) == nullptr);
  CHECK(q.next_deadline_ms(102) == 103);  // b: 98 + 5
  CHECK(q.pop_expired(103) == &b);
  CHECK(q.empty());
  // Emptied by expiries, the queue still stands: requests were shed within the interval.
  q.push(d, Priority::normal, 150);
  CHECK(q.standing(150));
  CHECK(q.pop_expired(154) == nullptr);
  CHECK(q.pop_expired(155) == &d);
  CHECK(q.overloaded(254));
  CHECK_FALSE(q.overloaded(255));
  // A request that gets a unit at once, nothing shed for an interval: no longer standing, the
  // next one waits in full.
  q.admitted_at_once(300);
  q.push(a, Priority::normal, 300);
  CHECK_FALSE(q.standing(350));
  CHECK(q.allowed_wait_ms(350, Priority::normal) == 50);
  CHECK(q.pop_expired(349) == nullptr);
  CHECK(q.pop_expired(350) == &a);
}

TEST_CASE("shed queue: waits within the target keep the queue from standing") {
  ShedQueue q(50, 5, 100);
  Waiter a("a"), b("b");
  q.admitted_at_once(0);
  for (std::uint64_t t = 0; t < 1000; t += 10) {
    q.push(a, Priority::normal, t);
    q.push(b, Priority::normal, t + 1);
    CHECK(q.pop(t + 4) == &a);  // 4 ms: a good wait
    CHECK(q.pop(t + 9) == &b);  // 8 ms: too long, but a's counts
  }
  q.push(a, Priority::normal, 1000);
  CHECK_FALSE(q.standing(1000));
  q.remove(a);
}

TEST_CASE("shed queue: a standing queue keeps critical requests first in, first out") {
  ShedQueue q(50, 5, 100);
  Waiter c1("c1"), c2("c2"), n1("n1"), n2("n2");
  q.push(c1, Priority::critical, 200);
  q.push(c2, Priority::critical, 201);
  q.push(n1, Priority::normal, 202);
  q.push(n2, Priority::normal, 203);
  q.shed(204);  // e.g. a sheddable arrival found the queue full
  REQUIRE(q.standing(204));
  CHECK(q.pop_expired(210) == &n1);  // normal: 5 ms
  CHECK(q.pop_expired(210) == &n2);
  CHECK(q.pop_expired(210) == nullptr);  // critical: 50 ms
  CHECK(q.next_deadline_ms(210) == 250);
  CHECK(q.pop(211) == &c1);
  CHECK(q.pop(211) == &c2);
}

TEST_CASE("shed queue: a new queue is not standing before it has waited an interval") {
  // A worker whose first request had to wait never had a good sign: that alone does not make
  // a queue stand, it must have been busy for a whole interval.
  ShedQueue q(5000, ShedQueue::target_for(5000), ShedQueue::interval_for(5000));
  Waiter a("a");
  q.push(a, Priority::normal, 100000);
  CHECK_FALSE(q.standing(100000));
  // The timer's next event is a's own deadline, not a moment long past (a timer due at once
  // that finds nothing to do would spin).
  CHECK(q.next_deadline_ms(100000) == 105000);
  CHECK(q.allowed_wait_ms(100400, Priority::normal) == 5000);
  CHECK(q.pop_expired(100600) == nullptr);  // 600 ms: past the target, within the timeout
  CHECK(q.standing(110000));                // busy for two timeouts with nothing good
  CHECK(q.pop_expired(110000) == &a);
}

TEST_CASE("shed queue: a request shed makes the queue stand for an interval") {
  ShedQueue q(50, 5, 100);
  Waiter a("a");
  q.admitted_at_once(1000);
  q.push(a, Priority::normal, 1000);
  CHECK_FALSE(q.standing(1001));
  q.shed(1001);  // e.g. the queue was full
  CHECK(q.standing(1001));
  CHECK(q.allowed_wait_ms(1001, Priority::normal) == 5);
  CHECK(q.standing(1100));
  q.admitted_at_once(1080);  // and a request got a unit at once since
  CHECK_FALSE(q.standing(1101));
  q.remove(a);
}

TEST_CASE("shed queue: the queue turns standing while waits are long; the timer hears of it") {
  ShedQueue q(1000, 5, 100);
  Waiter a("a");
  q.admitted_at_once(0);
  q.push(a, Priority::normal, 0);
  // a's own deadline is 1000, but at 100 the queue turns standing and a's wait becomes 5 ms.
  CHECK(q.next_deadline_ms(0) == 100);
  CHECK(q.pop_expired(99) == nullptr);
  CHECK(q.pop_expired(100) == &a);
}

TEST_CASE("shed queue: CoDel's target and interval scale with a long queue.timeout") {
  CHECK(ShedQueue::target_for(50) == 5);
  CHECK(ShedQueue::interval_for(50) == 100);
  CHECK(ShedQueue::target_for(2000) == 200);
  CHECK(ShedQueue::interval_for(2000) == 4000);
  CHECK(ShedQueue::target_for(3) == 3);  // never longer than the timeout itself
  CHECK(ShedQueue::interval_for(3) == 100);
}

TEST_CASE("shed queue: room is made by the newest request of the lowest priority") {
  ShedQueue q(50);
  Waiter s1("s1"), s2("s2"), n1("n1"), c1("c1");
  q.push(s1, Priority::sheddable, 0);
  q.push(n1, Priority::normal, 1);
  q.push(s2, Priority::sheddable, 2);
  q.push(c1, Priority::critical, 3);
  CHECK(q.pop_lower(Priority::sheddable) == nullptr);  // nothing below sheddable
  CHECK(q.pop_lower(Priority::normal) == &s2);
  CHECK(q.pop_lower(Priority::normal) == &s1);
  CHECK(q.pop_lower(Priority::normal) == nullptr);  // a normal request does not evict a normal
  CHECK(q.pop_lower(Priority::critical) == &n1);
  CHECK(q.pop_lower(Priority::critical) == nullptr);
  CHECK(q.size() == 1);
  q.remove(c1);
  q.remove(c1);  // removing twice is harmless
  CHECK(q.empty());
}
