#include "upstream/upstream.h"
#include "upstream/upstream_fixture.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <memory>
#include <string>
#include <vector>

using namespace bulwark;

namespace {

using test::FakeRequest;
using Fixture = test::UpstreamFixture;

UpstreamConfig bulkhead(std::uint64_t max_requests, std::uint64_t max_pending) {
  UpstreamConfig c;
  c.name = "app";
  c.limits.max_requests = max_requests;
  c.limits.max_pending = max_pending;
  c.limits.pending_timeout_ms = 1000;
  return c;
}

}  // namespace

TEST_CASE("bulkhead: a slot freed by another worker just before the enqueue is not lost") {
  Fixture f(bulkhead(1, 10));
  Upstream& w0 = *f.views[0];
  Upstream& w1 = *f.views[1];
  FakeRequest a, b;
  REQUIRE(w0.admit(a) == Upstream::Admission::admitted);
  // Worker 1 finds the bulkhead full; worker 0 releases its slot before worker 1 enqueues.
  // Nobody is pending at that moment, so the release wakes nobody: worker 1 must see the free
  // slot itself.
  bool woken = false;
  w0.set_slot_freed_hook([&] { woken = true; });
  w1.set_before_enqueue_hook([&] { w0.release(); });
  CHECK(w1.admit(b) == Upstream::Admission::admitted);
  CHECK_FALSE(woken);
  CHECK(f.state->in_flight() == 1);
  CHECK(f.state->pending() == 0);
  CHECK_FALSE(w1.has_waiting());
  w1.release();
}

TEST_CASE("bulkhead: once queued, a release on another worker wakes the waiting worker") {
  Fixture f(bulkhead(1, 10));
  Upstream& w0 = *f.views[0];
  Upstream& w1 = *f.views[1];
  FakeRequest a, b;
  REQUIRE(w0.admit(a) == Upstream::Admission::admitted);
  REQUIRE(w1.admit(b) == Upstream::Admission::queued);
  CHECK(f.state->pending() == 1);
  bool woken = false;
  w0.set_slot_freed_hook([&] { woken = true; });
  w0.release();
  CHECK(woken);  // the server turns this into wake_pending() on the other workers
  w1.admit_waiting();
  CHECK(b.admitted == 1);
  CHECK(f.state->pending() == 0);
  w1.release();
}

namespace {
UpstreamConfig checked(bool with_breaker) {
  UpstreamConfig c = bulkhead(100, 100);
  c.health_check = HealthCheckConfig{};
  if (with_breaker) {
    CircuitBreakerConfig b;
    b.consecutive_failures = 1;
    b.open_for_ms = 10000;
    b.max_open_for_ms = 10000;
    c.circuit_breaker = b;
  }
  return c;
}
void mark(EndpointState& e, EndpointHealth h) { e.health.store(static_cast<int>(h)); }
void trip(EndpointState& e, std::uint64_t now) {
  ProbeTicket probe = 0;
  REQUIRE(e.breaker->try_acquire(now, &probe));
  e.breaker->record(0, CallResult::failure, 1, probe, now);
  REQUIRE(e.breaker->state() == BreakerState::open);
}
}  // namespace

TEST_CASE("panic: every endpoint marked down by health checks still gets traffic") {
  Fixture f(checked(false));
  f.set_endpoints(2);
  Upstream& u = *f.views[0];
  mark(f.endpoint(0), EndpointHealth::unhealthy);
  Upstream::Pick p = u.pick(1000);
  REQUIRE(p.endpoint);
  CHECK(p.endpoint->state.get() == &f.endpoint(1));  // one healthy left: no panic
  CHECK_FALSE(u.panic());
  CHECK(f.state->panic_routed() == 0);

  mark(f.endpoint(1), EndpointHealth::unhealthy);
  int seen[2] = {0, 0};
  for (int i = 0; i < 10; ++i) {
    p = u.pick(1000);
    REQUIRE(p.endpoint);
    ++seen[p.endpoint->state.get() == &f.endpoint(0) ? 0 : 1];
  }
  CHECK(seen[0] > 0);
  CHECK(seen[1] > 0);
  CHECK(u.panic());
  CHECK(f.state->panic() == PanicMode::all_ejected);
  CHECK(f.state->panic_routed() == 10);

  mark(f.endpoint(1), EndpointHealth::healthy);
  p = u.pick(1000);
  CHECK(p.endpoint->state.get() == &f.endpoint(1));
  CHECK(f.state->panic() == PanicMode::none);
  CHECK(f.state->panic_routed() == 10);
}

TEST_CASE("panic: with every endpoint ejected, open breakers still fail fast") {
  Fixture f(checked(true));
  f.set_endpoints(2);
  Upstream& u = *f.views[0];
  std::uint64_t now = 1000;
  mark(f.endpoint(0), EndpointHealth::unhealthy);
  trip(f.endpoint(1), now);
  // 0 is only marked down, 1 is open: 0 takes the traffic.
  for (int i = 0; i < 5; ++i) {
    Upstream::Pick p = u.pick(now);
    REQUIRE(p.endpoint);
    CHECK(p.endpoint->state.get() == &f.endpoint(0));
  }
  // Both open: 503 circuit-open at once, whatever the health checks say.
  trip(f.endpoint(0), now);
  Upstream::Pick p = u.pick(now);
  CHECK(p.endpoint == nullptr);
  CHECK(p.circuit_open);
  CHECK(f.state->panic() == PanicMode::none);
}

TEST_CASE("panic modes") {
  CHECK(panic_mode(3, 0, 0, 0.5) == PanicMode::none);
  CHECK(panic_mode(3, 1, 1, 0.5) == PanicMode::none);
  CHECK(panic_mode(3, 2, 0, 0.5) == PanicMode::max_ejected);
  CHECK(panic_mode(3, 3, 0, 0.5) == PanicMode::none);  // all open: fail fast
  CHECK(panic_mode(3, 3, 1, 0.5) == PanicMode::all_ejected);
  CHECK(panic_mode(1, 1, 1, 0.5) == PanicMode::all_ejected);
  CHECK(panic_mode(0, 0, 0, 0.5) == PanicMode::none);
}

TEST_CASE("panic beyond max_ejected: only picks of ejected endpoints count as panic-routed") {
  Fixture f(checked(false));
  f.set_endpoints(3);
  Upstream& u = *f.views[0];
  mark(f.endpoint(0), EndpointHealth::unhealthy);
  mark(f.endpoint(1), EndpointHealth::unhealthy);  // 2 of 3 > 50 %: all take traffic
  int to_ejected = 0;
  for (int i = 0; i < 30; ++i) {
    Upstream::Pick p = u.pick(1000);
    REQUIRE(p.endpoint);
    to_ejected += p.endpoint->state.get() != &f.endpoint(2);
  }
  CHECK(f.state->panic() == PanicMode::max_ejected);
  CHECK(to_ejected > 0);
  CHECK(to_ejected < 30);
  CHECK(f.state->panic_routed() == static_cast<std::uint64_t>(to_ejected));
}

namespace {
// A queued request that is answered as soon as it is admitted (a local reply, say), so it
// releases its slot from inside on_admitted().
struct InstantRequest final : PendingRequest {
  Upstream* upstream = nullptr;
  int* depth = nullptr;
  int* max_depth = nullptr;
  int* admitted = nullptr;
  void on_admitted() override {
    ++*admitted;
    ++*depth;
    if (*depth > *max_depth) *max_depth = *depth;
    upstream->release();
    --*depth;
  }
  void on_pending_timeout() override { FAIL("no request may time out"); }
};
}  // namespace

TEST_CASE("bulkhead: releasing a slot admits every queued request without recursing") {
  // Regression: release -> admit_waiting -> on_admitted -> (answered at once) -> release
  // recursed once per queued request; a long queue overflowed the stack.
  constexpr int kQueued = 10'000;
  Fixture f(bulkhead(1, kQueued), 1);
  Upstream& upstream = *f.views[0];
  int depth = 0, max_depth = 0, admitted = 0;
  FakeRequest first;
  REQUIRE(upstream.admit(first) == Upstream::Admission::admitted);
  std::vector<InstantRequest> queued(kQueued);
  for (auto& r : queued) {
    r.upstream = &upstream;
    r.depth = &depth;
    r.max_depth = &max_depth;
    r.admitted = &admitted;
    REQUIRE(upstream.admit(r) == Upstream::Admission::queued);
  }
  CHECK(f.state->pending() == kQueued);
  upstream.release();  // the first request ends: the whole queue goes through, next turn
  CHECK(admitted == 0);
  uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK(admitted == kQueued);
  CHECK(max_depth == 1);  // each on_admitted returned before the next one started
  CHECK(f.state->pending() == 0);
  CHECK(f.state->in_flight() == 0);
  CHECK_FALSE(upstream.has_waiting());
}
