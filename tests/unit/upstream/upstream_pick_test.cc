// Upstream::pick() (which endpoint the next attempt goes to) and the pending queue of the
// bulkhead (timeouts in queue order, cancellation of the head). upstream_test.cc covers the
// bulkhead's cross-worker cases and panic mode.
#include <doctest/doctest.h>
#include <uv.h>

#include <algorithm>
#include <set>
#include <vector>

#include "upstream/upstream.h"
#include "upstream/upstream_fixture.h"

using namespace bulwark;

namespace {

using test::FakeRequest;
using Fixture = test::UpstreamFixture;

UpstreamConfig plain(const char* balance = "least_request") {
  UpstreamConfig c;
  c.name = "app";
  c.balance = balance;
  return c;
}

UpstreamConfig with_breaker() {
  UpstreamConfig c = plain();
  CircuitBreakerConfig b;
  b.consecutive_failures = 1;
  b.open_for_ms = 5000;
  b.max_open_for_ms = 5000;
  b.half_open_requests = 1;
  b.max_ejected = 1.0;  // no panic mode: open breakers are skipped, whatever their number
  c.circuit_breaker = b;
  return c;
}

void trip(EndpointState& e, std::uint64_t now) {
  ProbeTicket probe = 0;
  REQUIRE(e.breaker->try_acquire(now, &probe));
  e.breaker->record(0, CallResult::failure, 1, probe, now);
  REQUIRE(e.breaker->state() == BreakerState::open);
}

int index_of(Fixture& f, const Upstream::Pick& p) {
  for (int i = 0; i < static_cast<int>(f.state->endpoints()->size()); ++i)
    if (p.endpoint && p.endpoint->state.get() == &f.endpoint(i)) return i;
  return -1;
}

}  // namespace

TEST_CASE("pick: no endpoints is no endpoint, and not the breakers' doing") {
  Fixture f(plain(), 1);
  Upstream::Pick p = f.views[0]->pick(1000);
  CHECK(p.endpoint == nullptr);
  CHECK_FALSE(p.circuit_open);
}

TEST_CASE("pick: the endpoint that just failed is avoided when another is usable") {
  Fixture f(plain(), 1);
  f.set_endpoints(3);
  Upstream& u = *f.views[0];
  Upstream::Pick first = u.pick(1000);
  REQUIRE(first.endpoint);
  int failed = index_of(f, first);
  std::set<int> seen;
  for (int i = 0; i < 50; ++i) {
    Upstream::Pick p = u.pick(1000, first.endpoint);
    REQUIRE(p.endpoint);
    CHECK(p.endpoint != first.endpoint);
    seen.insert(index_of(f, p));
  }
  // Both others take retries: only the failed one is left out.
  CHECK(seen.size() == 2);
  CHECK(seen.count(failed) == 0);
}

TEST_CASE("pick: with a single endpoint, the excluded one is still picked") {
  Fixture f(plain(), 1);
  f.set_endpoints(1);
  Upstream& u = *f.views[0];
  Upstream::Pick first = u.pick(1000);
  REQUIRE(first.endpoint);
  Upstream::Pick again = u.pick(1000, first.endpoint);
  CHECK(again.endpoint == first.endpoint);
}

TEST_CASE("pick: endpoints whose breaker is open are skipped") {
  Fixture f(with_breaker(), 1);
  f.set_endpoints(3);
  Upstream& u = *f.views[0];
  std::uint64_t now = 1000;
  trip(f.endpoint(1), now);
  std::set<int> seen;
  for (int i = 0; i < 60; ++i) {
    Upstream::Pick p = u.pick(now + 10);
    REQUIRE(p.endpoint);
    CHECK(p.probe == 0);  // closed breakers: no probes
    seen.insert(index_of(f, p));
  }
  CHECK(seen == std::set<int>{0, 2});
  CHECK_FALSE(u.panic());
}

TEST_CASE("pick: the excluded endpoint is taken when every other breaker is open") {
  Fixture f(with_breaker(), 1);
  f.set_endpoints(2);
  Upstream& u = *f.views[0];
  std::uint64_t now = 1000;
  trip(f.endpoint(1), now);
  // Endpoint 0 just failed a request (without tripping); 1 is open: 0 is the only choice.
  Upstream::Pick first = u.pick(now);
  REQUIRE(index_of(f, first) == 0);
  Upstream::Pick retry = u.pick(now, first.endpoint);
  CHECK(retry.endpoint == first.endpoint);
}

TEST_CASE("pick: with every breaker open, nothing is picked and the wait is until the earliest") {
  Fixture f(with_breaker(), 1);
  f.set_endpoints(2);
  Upstream& u = *f.views[0];
  trip(f.endpoint(0), 1000);  // open until about 6000 (the open time is jittered)
  trip(f.endpoint(1), 2000);  // about 7000
  std::uint64_t earliest =
      std::min(f.endpoint(0).breaker->open_until_ms(), f.endpoint(1).breaker->open_until_ms());
  REQUIRE(earliest > 2500);
  Upstream::Pick p = u.pick(2500);
  CHECK(p.endpoint == nullptr);
  CHECK(p.circuit_open);
  CHECK(p.retry_after_ms == earliest - 2500);
}

TEST_CASE("pick: once open_for has passed, an endpoint gets one half-open probe") {
  Fixture f(with_breaker(), 1);
  f.set_endpoints(2);
  Upstream& u = *f.views[0];
  trip(f.endpoint(0), 1000);
  trip(f.endpoint(1), 1000);
  // At the later of the two (jittered) open times both may half-open; one probe
  // each (half_open_requests = 1).
  std::uint64_t later = std::max(f.endpoint(0).breaker->open_until_ms(),
                                 f.endpoint(1).breaker->open_until_ms());
  Upstream::Pick a = u.pick(later);
  REQUIRE(a.endpoint);
  CHECK(a.probe != 0);
  Upstream::Pick b = u.pick(later);
  REQUIRE(b.endpoint);
  CHECK(b.probe != 0);
  CHECK(a.endpoint != b.endpoint);
  // Both probe permits taken: the next request finds nothing.
  Upstream::Pick c = u.pick(later);
  CHECK(c.endpoint == nullptr);
  CHECK(c.circuit_open);
}

TEST_CASE("pick: least_request prefers the endpoint with fewer requests in flight") {
  Fixture f(plain("least_request"), 1);
  f.set_endpoints(2);
  Upstream& u = *f.views[0];
  Upstream::Pick busy = u.pick(1000);
  REQUIRE(busy.endpoint);
  for (int i = 0; i < 3; ++i) u.begin_request(*busy.endpoint);
  CHECK(u.stats(*busy.endpoint).in_flight.get() == 3);
  // With two endpoints the two candidates compared are always both of them.
  for (int i = 0; i < 20; ++i) {
    Upstream::Pick p = u.pick(1000);
    REQUIRE(p.endpoint);
    CHECK(p.endpoint != busy.endpoint);
  }
  for (int i = 0; i < 3; ++i) u.end_request(*busy.endpoint);
  CHECK(u.stats(*busy.endpoint).in_flight.get() == 0);
}

namespace {
UpstreamConfig queue_config(std::uint64_t pending_timeout_ms) {
  UpstreamConfig c = plain();
  c.limits.max_requests = 1;
  c.limits.max_pending = 10;
  c.limits.pending_timeout_ms = pending_timeout_ms;
  return c;
}

// Records the order in which requests time out.
struct OrderedRequest final : PendingRequest {
  int id = 0;
  std::vector<int>* order = nullptr;
  int admitted = 0;
  void on_admitted() override { ++admitted; }
  void on_pending_timeout() override { order->push_back(id); }
};

template <typename F>
void run_until(uv_loop_t* loop, F done) {
  for (int i = 0; i < 100000 && !done(); ++i) uv_run(loop, UV_RUN_ONCE);
  REQUIRE(done());
}
}  // namespace

TEST_CASE("pending queue: waiting requests time out in queue order, each once") {
  Fixture f(queue_config(5), 1);
  Upstream& u = *f.views[0];
  FakeRequest holder;
  REQUIRE(u.admit(holder) == Upstream::Admission::admitted);
  std::vector<int> order;
  std::vector<OrderedRequest> rs(4);
  for (int i = 0; i < 4; ++i) {
    rs[i].id = i;
    rs[i].order = &order;
    REQUIRE(u.admit(rs[i]) == Upstream::Admission::queued);
  }
  CHECK(f.state->pending() == 4);
  run_until(&f.loop, [&] { return order.size() == 4; });
  CHECK(order == std::vector<int>{0, 1, 2, 3});
  CHECK(f.state->pending() == 0);
  CHECK_FALSE(u.has_waiting());
  // The timer stopped with the queue empty: the loop has nothing left to wait for.
  for (int i = 0; i < 5; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK(order.size() == 4);
  CHECK(holder.timed_out == 0);  // admitted requests never time out
  u.release();
}

TEST_CASE("pending queue: a request admitted before its deadline does not time out") {
  Fixture f(queue_config(5), 1);
  Upstream& u = *f.views[0];
  FakeRequest holder, waiting, late;
  REQUIRE(u.admit(holder) == Upstream::Admission::admitted);
  REQUIRE(u.admit(waiting) == Upstream::Admission::queued);
  REQUIRE(u.admit(late) == Upstream::Admission::queued);
  u.release();  // the head gets the slot, on the next loop turn
  uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK(waiting.admitted == 1);
  run_until(&f.loop, [&] { return late.timed_out > 0; });
  CHECK(waiting.timed_out == 0);
  CHECK(late.admitted == 0);
  u.release();
}

TEST_CASE("pending queue: cancelling the head re-arms the timer for the next one") {
  Fixture f(queue_config(100), 1);
  Upstream& u = *f.views[0];
  FakeRequest holder, head, next;
  REQUIRE(u.admit(holder) == Upstream::Admission::admitted);
  REQUIRE(u.admit(head) == Upstream::Admission::queued);  // due in 100 ms
  REQUIRE(u.admit(next) == Upstream::Admission::queued);
  // The next one is due much later (as if it had come a minute after the head).
  next.pending_deadline_ms += 60000;
  // One turn first: uv_backend_timeout() answers 0 for a loop that has not run yet.
  uv_run(&f.loop, UV_RUN_NOWAIT);
  int before = uv_backend_timeout(&f.loop);
  CHECK(before > 0);
  CHECK(before <= 100);
  u.cancel(head);
  CHECK(f.state->pending() == 1);
  // The loop's next timer is now the new head's deadline, not the cancelled one's.
  int after = uv_backend_timeout(&f.loop);
  CHECK(after > 1000);
  CHECK(head.timed_out == 0);
  // Cancelling the last one stops the timer: the loop would not wake for nobody.
  u.cancel(next);
  CHECK(f.state->pending() == 0);
  CHECK_FALSE(uv_loop_alive(&f.loop));
  u.release();
}

TEST_CASE("pending queue: cancelling a request behind the head keeps the head's deadline") {
  Fixture f(queue_config(5), 1);
  Upstream& u = *f.views[0];
  FakeRequest holder, head, middle, tail;
  REQUIRE(u.admit(holder) == Upstream::Admission::admitted);
  REQUIRE(u.admit(head) == Upstream::Admission::queued);
  REQUIRE(u.admit(middle) == Upstream::Admission::queued);
  REQUIRE(u.admit(tail) == Upstream::Admission::queued);
  u.cancel(middle);
  CHECK(f.state->pending() == 2);
  run_until(&f.loop, [&] { return tail.timed_out > 0; });
  CHECK(head.timed_out == 1);
  CHECK(middle.timed_out == 0);
  u.release();
}

TEST_CASE("pending queue: a full queue rejects, and max_pending 0 means no queue") {
  SUBCASE("full") {
    UpstreamConfig c = queue_config(1000);
    c.limits.max_pending = 1;
    Fixture f(c, 1);
    Upstream& u = *f.views[0];
    FakeRequest holder, queued, rejected;
    REQUIRE(u.admit(holder) == Upstream::Admission::admitted);
    CHECK(u.admit(queued) == Upstream::Admission::queued);
    CHECK(u.admit(rejected) == Upstream::Admission::rejected);
    CHECK(f.state->pending() == 1);
    u.cancel(queued);
    u.release();
  }
  SUBCASE("no queue") {
    UpstreamConfig c = queue_config(1000);
    c.limits.max_pending = 0;
    Fixture f(c, 1);
    Upstream& u = *f.views[0];
    FakeRequest holder, rejected;
    REQUIRE(u.admit(holder) == Upstream::Admission::admitted);
    CHECK(u.admit(rejected) == Upstream::Admission::rejected);
    CHECK(f.state->pending() == 0);
    u.release();
  }
}
