// What a request holds on shared state is given back by its owners: a bulkhead slot by
// BulkheadTicket, an endpoint's in-flight count and its breaker's verdict by EndpointClaim.
#include <doctest/doctest.h>
#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "pipeline/attempt.h"
#include "pipeline/exchange.h"
#include "upstream/upstream.h"
#include "upstream/upstream_fixture.h"

using namespace bulwark;

namespace {

using test::FakeRequest;

// One worker's view of the upstream.
struct Fixture : test::UpstreamFixture {
  explicit Fixture(UpstreamConfig c) : test::UpstreamFixture(std::move(c), 1), upstream(views[0].get()) {}
  Upstream* upstream;
};

UpstreamConfig upstream_config(std::uint64_t max_requests, bool breaker) {
  UpstreamConfig c;
  c.name = "app";
  c.limits.max_requests = max_requests;
  c.limits.max_pending = 10;
  c.limits.pending_timeout_ms = 1000;
  if (breaker) {
    CircuitBreakerConfig b;
    b.consecutive_failures = 1;
    b.open_for_ms = 1000;
    b.max_open_for_ms = 1000;
    b.half_open_requests = 1;
    c.circuit_breaker = b;
  }
  return c;
}

}  // namespace

TEST_CASE("bulkhead ticket: the slot comes back when the ticket goes, to the next in line") {
  Fixture f(upstream_config(1, false));
  Upstream& u = *f.upstream;
  FakeRequest first, second;
  REQUIRE(u.admit(first) == Upstream::Admission::admitted);
  {
    BulkheadTicket ticket;
    ticket.take(u);
    CHECK(ticket.held());
    REQUIRE(u.admit(second) == Upstream::Admission::queued);
    CHECK(second.admitted == 0);
  }
  CHECK(second.admitted == 0);  // not from inside the release: on the next loop turn
  uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK(second.admitted == 1);  // the freed slot went to the waiting request
  CHECK(f.state->in_flight() == 1);
  CHECK(f.state->pending() == 0);
  {
    BulkheadTicket ticket;
    ticket.take(u);
    ticket.release();
    CHECK_FALSE(ticket.held());
    CHECK(f.state->in_flight() == 0);
  }  // released once: the destructor gives nothing back twice
  CHECK(f.state->in_flight() == 0);
}

TEST_CASE(
    "endpoint claim: in flight while held; dropped without a verdict, the probe permit "
    "comes back") {
  Fixture f(upstream_config(100, true));
  f.set_endpoints(1);
  Upstream& u = *f.upstream;
  CircuitBreaker& breaker = *f.endpoint(0).breaker;
  ProbeTicket trip = 0;
  REQUIRE(breaker.try_acquire(1000, &trip));
  breaker.record(0, CallResult::failure, 1, trip, 1000);
  REQUIRE(breaker.state() == BreakerState::open);

  Upstream::Pick pick = u.pick(10000);  // long after open_for: half-open, one probe
  REQUIRE(pick.endpoint);
  REQUIRE(pick.probe != 0);
  CHECK(breaker.probes_in_flight() == 1);
  {
    EndpointClaim claim;
    claim.begin(u, *pick.endpoint, pick.probe, uv_now(&f.loop), &f.loop);
    CHECK(pick.endpoint->in_flight == 1);
    CHECK(claim.endpoint() == pick.endpoint);
  }
  CHECK(pick.endpoint->in_flight == 0);
  CHECK(breaker.probes_in_flight() == 0);  // reported as cancelled
  CHECK(breaker.state() == BreakerState::half_open);
}

TEST_CASE("endpoint claim: the breaker hears the first verdict only") {
  Fixture f(upstream_config(100, true));  // one failure trips it
  f.set_endpoints(1);
  Upstream& u = *f.upstream;
  CircuitBreaker& breaker = *f.endpoint(0).breaker;
  Upstream::Pick pick = u.pick(1000);
  REQUIRE(pick.endpoint);
  EndpointClaim claim;
  claim.begin(u, *pick.endpoint, pick.probe, uv_now(&f.loop), &f.loop);
  claim.report(CallResult::success);
  claim.report(CallResult::failure);
  claim.end(CallResult::failure);
  CHECK(breaker.state() == BreakerState::closed);
  CHECK(pick.endpoint->in_flight == 0);
  claim.end(CallResult::failure);  // over already: nothing more is counted
  CHECK(pick.endpoint->in_flight == 0);
  CHECK(breaker.state() == BreakerState::closed);
}
