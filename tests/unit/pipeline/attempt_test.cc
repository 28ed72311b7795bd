// Attempt (pipeline/attempt.h): one try of a request against one endpoint. Driven through the
// whole request path (proxy_fixture.h), since an Attempt belongs to an Exchange: its claim on
// the endpoint (in flight while it lasts, the breaker told the outcome), its wait for a
// connection of a full pool, and the cancellation of that wait when the request goes away.
// EndpointClaim on its own is covered in request_ownership_test.cc.
#include "pipeline/attempt.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <string>

#include "pipeline/proxy_fixture.h"

using namespace bulwark;

namespace {

using test::ClientResponse;
using test::get;
using test::ok;
using test::ProxyFixture;

void one_connection(Config& c) { c.upstreams[0].pool.max_connections = 1; }

std::size_t heads(test::LoopbackBackend::Conn& c) {
  std::size_t n = 0;
  for (std::size_t at = c.received.find("\r\n\r\n"); at != std::string::npos;
       at = c.received.find("\r\n\r\n", at + 4))
    ++n;
  return n;
}

UpstreamEndpoint& endpoint(ProxyFixture& f) {
  Upstream::Pick p = f.worker->upstream(0).pick(uv_now(f.loop));
  REQUIRE(p.endpoint);
  return *p.endpoint;
}

}  // namespace

TEST_CASE("attempt: the endpoint counts it in flight while it lasts") {
  ProxyFixture f;
  test::TestClient& c = f.connect();
  c.send(get("/a"));
  f.run_until([&] { return f.backend->accepted() == 1 && heads(f.backend->conn(0)) == 1; });
  CHECK(endpoint(f).in_flight == 1);
  CHECK(f.worker->upstream(0).stats(endpoint(f)).in_flight.get() == 1);
  f.backend->conn(0).write(ok("A"));
  CHECK(f.response(c).status == 200);
  CHECK(endpoint(f).in_flight == 0);
  CHECK(f.worker->upstream(0).stats(endpoint(f)).in_flight.get() == 0);
}

TEST_CASE("attempt: with the pool full it waits, and gets the connection the previous one frees") {
  ProxyFixture f(one_connection);
  test::TestClient& a = f.connect();
  test::TestClient& b = f.connect();
  a.send(get("/a"));
  f.run_until([&] { return f.backend->accepted() == 1 && heads(f.backend->conn(0)) == 1; });
  b.send(get("/b"));
  f.settle();
  // b's attempt waits for the pool's one connection: nothing of b went upstream.
  CHECK(f.pool().total() == 1);
  CHECK(heads(f.backend->conn(0)) == 1);
  CHECK(f.backend->accepted() == 1);
  f.backend->conn(0).write(ok("A"));
  CHECK(f.response(a).body == "A");
  // The released connection went straight to b's attempt.
  f.run_until([&] { return heads(f.backend->conn(0)) == 2; });
  CHECK(f.backend->conn(0).received.find("GET /b ") != std::string::npos);
  CHECK(f.backend->accepted() == 1);
  f.backend->conn(0).write(ok("B"));
  CHECK(f.response(b).body == "B");
  f.settle();
  CHECK(f.pool().idle() == 1);
  CHECK(endpoint(f).in_flight == 0);
}

TEST_CASE("attempt: a request that goes away while waiting for a connection stops waiting") {
  ProxyFixture f(one_connection);
  test::TestClient& a = f.connect();
  test::TestClient& b = f.connect();
  a.send(get("/a"));
  f.run_until([&] { return f.backend->accepted() == 1 && heads(f.backend->conn(0)) == 1; });
  b.send(get("/b"));
  f.settle();
  CHECK(endpoint(f).in_flight == 2);  // b's attempt holds its claim while it waits
  // b's client goes away (a reset: a FIN could be a half-close, after which b's request
  // would still be answered): its exchange ends, and with it the attempt's wait and claim.
  b.reset();
  f.run_until([&] { return f.listener().connections == 1; });
  CHECK(endpoint(f).in_flight == 1);
  // The connection a frees is not handed to the attempt that is gone: it goes idle.
  f.backend->conn(0).write(ok("A"));
  CHECK(f.response(a).body == "A");
  f.settle();
  CHECK(f.pool().idle() == 1);
  CHECK(heads(f.backend->conn(0)) == 1);
  CHECK(endpoint(f).in_flight == 0);
}

TEST_CASE("attempt: an upstream failure is told to the endpoint's breaker") {
  ProxyFixture f([](Config& c) {
    CircuitBreakerConfig b;
    b.consecutive_failures = 1;
    b.open_for_ms = 60000;
    b.max_open_for_ms = 60000;
    b.max_ejected = 1.0;
    c.upstreams[0].circuit_breaker = b;
  });
  test::TestClient& c = f.connect();
  c.send(get("/a"));
  f.run_until([&] { return f.backend->accepted() == 1 && heads(f.backend->conn(0)) == 1; });
  f.backend->conn(0).reset();
  ClientResponse r = f.response(c);
  CHECK(r.status == 502);
  CircuitBreaker& breaker = *(*f.upstream_state->endpoints())[0]->breaker;
  CHECK(breaker.state() == BreakerState::open);
  // The next request fails fast: the endpoint is not tried.
  test::TestClient& d = f.connect();
  d.send(get("/b"));
  CHECK(f.response(d).status == 503);
  CHECK(f.backend->accepted() == 1);
}

TEST_CASE("attempt: a success is told to the breaker too (a half-open probe closes it)") {
  ProxyFixture f([](Config& c) {
    CircuitBreakerConfig b;
    b.consecutive_failures = 1;
    b.open_for_ms = 1;
    b.max_open_for_ms = 1;
    b.half_open_requests = 1;
    b.max_ejected = 1.0;
    c.upstreams[0].circuit_breaker = b;
  });
  CircuitBreaker& breaker = *(*f.upstream_state->endpoints())[0]->breaker;
  // Trip it by hand at time 0: long before the loop's clock, so it may half-open at once.
  ProbeTicket t = 0;
  REQUIRE(breaker.try_acquire(0, &t));
  breaker.record(0, CallResult::failure, 1, t, 0);
  REQUIRE(breaker.state() == BreakerState::open);
  f.backend->auto_response = ok("fine");
  test::TestClient& c = f.connect();
  c.send(get("/probe"));
  CHECK(f.response(c).status == 200);
  CHECK(breaker.state() == BreakerState::closed);
}
