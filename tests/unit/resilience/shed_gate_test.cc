// Load shedding as a worker runs it (ShedGate): waiting and admission on the next loop turn,
// eviction (on the same worker and across workers), shadow mode, retries, wake-ups between
// workers, the critical reserve's lapse, a limit raised by a sample.
#include "resilience/shed_gate.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <string>
#include <vector>

#include "resilience/shedding_fixture.h"

using namespace bulwark;
using test::aimd_limit;
using test::fixed_limit;
using test::Loop;
using test::Waiter;

TEST_CASE("gate: over the limit a request waits, and gets the unit given back next turn") {
  Loop l;
  LoadShedder s(fixed_limit(1), 1);
  ShedGate g(&l.loop, s, 0);
  std::vector<std::string> log;
  Waiter a("a", &log), b("b", &log);
  REQUIRE(g.admit(a, Priority::normal) == ShedGate::Result::admitted);
  REQUIRE(g.admit(b, Priority::normal) == ShedGate::Result::queued);
  CHECK(s.queued() == 1);
  l.turn();
  CHECK(log.empty());  // still no unit
  g.release(Priority::normal);
  CHECK(log.empty());  // never from inside the release: on the next loop turn
  l.turn();
  CHECK(log == std::vector<std::string>{"+b"});
  CHECK(s.queued() == 0);
  CHECK(s.in_flight() == 1);
  g.release(Priority::normal);
  g.close();
}

TEST_CASE("gate: a full queue sheds the newest lower-priority waiter for a higher arrival") {
  Loop l;
  LoadShedder s(fixed_limit(1, 2), 1);
  ShedGate g(&l.loop, s, 0);
  std::vector<std::string> log;
  Waiter hold("hold", &log), s1("s1", &log), s2("s2", &log), c("c", &log), n("n", &log);
  REQUIRE(g.admit(hold, Priority::normal) == ShedGate::Result::admitted);
  REQUIRE(g.admit(s1, Priority::sheddable) == ShedGate::Result::queued);
  REQUIRE(g.admit(s2, Priority::sheddable) == ShedGate::Result::queued);
  // Full: a sheddable arrival is shed at once, a critical one takes s2's place.
  CHECK(g.admit(n, Priority::sheddable) == ShedGate::Result::rejected);
  CHECK(g.admit(c, Priority::critical) == ShedGate::Result::queued);
  CHECK(s.queued() == 2);
  CHECK(s.shed(Priority::sheddable) == 2);  // the arrival and s2
  CHECK(log.empty());                       // s2 hears of it on the next turn
  l.turn();
  CHECK(log == std::vector<std::string>{"-s2"});
  CHECK(s2.detail == ShedGate::evicted_detail());
  // The freed unit goes to the critical request, not to the older sheddable one.
  g.release(Priority::normal);
  l.turn();
  CHECK(log == std::vector<std::string>{"-s2", "+c"});
  g.cancel(s1);  // its client went away: never called back, no longer counted
  CHECK(s.queued() == 0);
  g.release(Priority::critical);
  l.turn();
  CHECK(s1.admitted == 0);
  CHECK(s1.rejected == 0);
  g.close();
}

TEST_CASE("gate: an evicted waiter that goes away before the next turn is never called") {
  Loop l;
  LoadShedder s(fixed_limit(1, 1), 1);
  ShedGate g(&l.loop, s, 0);
  Waiter hold("hold"), s1("s1"), c("c");
  REQUIRE(g.admit(hold, Priority::normal) == ShedGate::Result::admitted);
  REQUIRE(g.admit(s1, Priority::sheddable) == ShedGate::Result::queued);
  REQUIRE(g.admit(c, Priority::critical) == ShedGate::Result::queued);
  g.cancel(s1);
  l.turn();
  CHECK(s1.rejected == 0);
  CHECK(s.queued() == 1);
  g.cancel(c);
  CHECK(s.queued() == 0);
  g.release(Priority::normal);
  g.close();
}

TEST_CASE("gate: a queue of size 0 sheds at once; shadow mode never sheds but counts") {
  Loop l;
  LoadShedder s(fixed_limit(1, 0), 1);
  ShedGate g(&l.loop, s, 0);
  Waiter a("a"), b("b");
  REQUIRE(g.admit(a, Priority::normal) == ShedGate::Result::admitted);
  CHECK(g.admit(b, Priority::critical) == ShedGate::Result::rejected);
  CHECK(s.shed(Priority::critical) == 1);
  g.release(Priority::normal);
  g.close();

  LoadSheddingConfig shadow = fixed_limit(1, 10);
  shadow.enforce = false;
  LoadShedder t(shadow, 1);
  ShedGate h(&l.loop, t, 0);
  REQUIRE(h.admit(a, Priority::normal) == ShedGate::Result::admitted);
  CHECK(h.admit(b, Priority::normal) == ShedGate::Result::shadow);
  CHECK(t.in_flight() == 2);  // the algorithm sees the real concurrency
  CHECK(t.shed(Priority::normal) == 1);
  CHECK(t.queued() == 0);
  CHECK(h.retry_allowed());
  h.release(Priority::normal);
  h.release(Priority::normal);
  h.close();
}

TEST_CASE("gate: retries yield to first attempts under overload") {
  Loop l;
  LoadShedder s(fixed_limit(2, 10), 1);
  ShedGate g(&l.loop, s, 0);
  Waiter a("a"), b("b"), c("c");
  REQUIRE(g.admit(a, Priority::normal) == ShedGate::Result::admitted);
  CHECK(g.retry_allowed());  // below the limit, nobody waiting
  REQUIRE(g.admit(b, Priority::normal) == ShedGate::Result::admitted);
  CHECK(g.retry_allowed());  // at the limit, but nobody waits for a unit
  REQUIRE(g.admit(c, Priority::normal) == ShedGate::Result::queued);
  CHECK_FALSE(g.retry_allowed());  // a first attempt waits: a retry would keep it waiting
  g.cancel(c);
  g.release(Priority::normal);
  g.release(Priority::normal);
  g.close();
}

TEST_CASE("gate: a unit freed on one worker wakes a request waiting on another") {
  Loop l;
  LoadShedder s(fixed_limit(1, 10), 2);
  ShedGate w0(&l.loop, s, 0), w1(&l.loop, s, 1);
  int woken = 0;
  w0.set_wake_others([&] {
    ++woken;
    w1.wake();  // what the worker's async wake-up does
  });
  Waiter a("a"), b("b");
  REQUIRE(w0.admit(a, Priority::normal) == ShedGate::Result::admitted);
  REQUIRE(w1.admit(b, Priority::normal) == ShedGate::Result::queued);
  l.turn();
  CHECK(b.admitted == 0);
  w0.release(Priority::normal);
  CHECK(woken == 1);
  l.turn();
  CHECK(b.admitted == 1);
  w1.release(Priority::normal);
  CHECK(woken == 1);  // nobody waits any more: nobody to wake
  w0.close();
  w1.close();
}

TEST_CASE("gate: requests held back by the critical reserve get in when it lapses") {
  Loop l;
  LoadSheddingConfig c = fixed_limit(2, 10, 5000);
  c.critical_reserve = 0.5;  // one unit of two
  LoadShedder s(c, 1);
  ShedGate g(&l.loop, s, 0);
  Waiter crit("c"), a("a"), b("b");
  REQUIRE(g.admit(crit, Priority::critical) == ShedGate::Result::admitted);
  g.release(Priority::critical);  // critical traffic was here a moment ago
  REQUIRE(g.admit(a, Priority::normal) == ShedGate::Result::admitted);
  REQUIRE(g.admit(b, Priority::normal) == ShedGate::Result::queued);  // the reserve binds
  // Nothing is given back; the reserve lapses a second after the critical request, and the
  // gate's timer must be due by then to let b in (its own wait is 5 s).
  l.turn();
  CHECK(b.admitted == 0);
  CHECK(g.next_event_in_ms() <= 1001);
  // When that timer fires, the reserve has lapsed: b gets in (not only when its 5 s wait runs
  // out or a unit is given back). Firing at the last millisecond it binds let b wait on.
  uv_run(&l.loop, UV_RUN_ONCE);
  CHECK(b.admitted == 1);
  g.release(Priority::normal);
  g.release(Priority::normal);
  g.close();
}

TEST_CASE("gate: a unit freed on one worker goes to a critical request waiting on another") {
  Loop l;
  LoadShedder s(fixed_limit(1, 10), 2);
  ShedGate w0(&l.loop, s, 0), w1(&l.loop, s, 1);
  w0.set_wake_others([&] { w1.wake(); });
  w1.set_wake_others([&] { w0.wake(); });
  std::vector<std::string> log;
  Waiter hold("hold", &log), n("n", &log), c("c", &log);
  REQUIRE(w0.admit(hold, Priority::normal) == ShedGate::Result::admitted);
  REQUIRE(w0.admit(n, Priority::normal) == ShedGate::Result::queued);
  REQUIRE(w1.admit(c, Priority::critical) == ShedGate::Result::queued);
  CHECK(s.critical_waiting() == 1);
  l.turn();
  w0.release(Priority::normal);
  l.turn();
  l.turn();
  // The critical request on worker 1 got the unit, not the older normal one on worker 0.
  CHECK(log == std::vector<std::string>{"+c"});
  CHECK(s.critical_waiting() == 0);
  // A normal arrival does not take a unit from under a waiting critical request either.
  w1.release(Priority::critical);
  l.turn();
  CHECK(log == std::vector<std::string>{"+c", "+n"});
  w0.release(Priority::normal);
  w0.close();
  w1.close();
}

TEST_CASE("gate: a full queue makes room on another worker for a higher priority") {
  Loop l;
  LoadShedder s(fixed_limit(1, 2), 2);
  ShedGate w0(&l.loop, s, 0), w1(&l.loop, s, 1);
  w0.set_wake_others([&] { w1.wake(); });
  w1.set_wake_others([&] { w0.wake(); });
  std::vector<std::string> log;
  Waiter hold("hold", &log), s1("s1", &log), s2("s2", &log), c("c", &log), n("n", &log);
  REQUIRE(w0.admit(hold, Priority::normal) == ShedGate::Result::admitted);
  REQUIRE(w0.admit(s1, Priority::sheddable) == ShedGate::Result::queued);
  REQUIRE(w0.admit(s2, Priority::sheddable) == ShedGate::Result::queued);
  // Worker 1 has nothing to evict; worker 0 owes it the eviction of its newest sheddable.
  CHECK(w1.admit(c, Priority::critical) == ShedGate::Result::queued);
  CHECK(s.queued() == 3);  // one over the size until worker 0 pays
  l.turn();
  CHECK(log == std::vector<std::string>{"-s2"});
  CHECK(s2.detail == ShedGate::evicted_detail());
  CHECK(s.queued() == 2);
  // s1 is spoken for by nobody now: a normal arrival on worker 1 may take its place.
  CHECK(w1.admit(n, Priority::normal) == ShedGate::Result::queued);
  l.turn();
  CHECK(log == std::vector<std::string>{"-s2", "-s1"});
  // A second critical arrival evicts the normal request on its own worker.
  Waiter c2("c2", &log), c3("c3", &log);
  CHECK(w1.admit(c2, Priority::critical) == ShedGate::Result::queued);
  l.turn();
  CHECK(log == std::vector<std::string>{"-s2", "-s1", "-n"});
  // Nothing of lower priority anywhere: a third one is shed.
  CHECK(w0.admit(c3, Priority::critical) == ShedGate::Result::rejected);
  w0.release(Priority::normal);
  l.turn();
  l.turn();
  CHECK(c.admitted == 1);
  w1.release(Priority::critical);
  l.turn();
  CHECK(c2.admitted == 1);
  w1.release(Priority::critical);
  CHECK(s.queued() == 0);
  CHECK(s.in_flight() == 0);
  CHECK_FALSE(s.owes_evictions(0));
  CHECK_FALSE(s.owes_evictions(1));
  w0.close();
  w1.close();
}

TEST_CASE("gate: a limit raised by a sample on one worker lets another worker's requests in") {
  Loop l;
  LoadShedder s(aimd_limit(1, 10), 2);
  ShedGate w0(&l.loop, s, 0), w1(&l.loop, s, 1);
  int woken = 0;
  w0.set_wake_others([&] {
    ++woken;
    w1.wake();
  });
  Waiter a("a"), b("b");
  REQUIRE(w0.admit(a, Priority::normal) == ShedGate::Result::admitted);
  REQUIRE(w1.admit(b, Priority::normal) == ShedGate::Result::queued);
  l.turn();
  CHECK(b.admitted == 0);
  w0.sample(1'000'000, 1000, 1, false);  // the limit becomes 2
  CHECK(woken == 1);
  l.turn();
  CHECK(b.admitted == 1);
  w0.release(Priority::normal);
  w1.release(Priority::normal);
  w0.close();
  w1.close();
}

TEST_CASE("gate: a limit raised by a sample lets waiting requests in") {
  Loop l;
  LoadShedder s(aimd_limit(1, 10), 1);
  ShedGate g(&l.loop, s, 0);
  Waiter a("a"), b("b");
  REQUIRE(g.admit(a, Priority::normal) == ShedGate::Result::admitted);
  REQUIRE(g.admit(b, Priority::normal) == ShedGate::Result::queued);
  g.sample(1'000'000, 1000, 1, false);  // one success pressing a limit of 1: the limit is 2
  CHECK(s.limit() == 2);
  l.turn();
  CHECK(b.admitted == 1);
  g.release(Priority::normal);
  g.release(Priority::normal);
  g.close();
}
