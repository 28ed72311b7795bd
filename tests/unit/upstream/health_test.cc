#include "upstream/health.h"

#include <doctest/doctest.h>

#include <random>

using namespace bulwark;

TEST_CASE("health: unknown until the first result; one success makes it healthy") {
  HealthTracker t(2, 3);
  CHECK(t.state() == EndpointHealth::unknown);
  CHECK(t.record(true));
  CHECK(t.state() == EndpointHealth::healthy);
  CHECK_FALSE(t.record(true));
}

TEST_CASE("health: unhealthy_threshold failures in a row mark it down") {
  HealthTracker t(2, 3);
  t.record(true);
  CHECK_FALSE(t.record(false));
  CHECK_FALSE(t.record(false));
  CHECK_FALSE(t.record(true));  // the streak is broken
  CHECK_FALSE(t.record(false));
  CHECK_FALSE(t.record(false));
  CHECK(t.record(false));
  CHECK(t.state() == EndpointHealth::unhealthy);
}

TEST_CASE("health: healthy_threshold successes in a row bring it back") {
  HealthTracker t(2, 1);
  CHECK(t.record(false));  // from unknown, with a threshold of 1
  CHECK(t.state() == EndpointHealth::unhealthy);
  CHECK_FALSE(t.record(true));
  CHECK_FALSE(t.record(false));
  CHECK_FALSE(t.record(true));
  CHECK(t.record(true));
  CHECK(t.state() == EndpointHealth::healthy);
}

TEST_CASE("health: an endpoint that never answers goes from unknown to unhealthy") {
  HealthTracker t(2, 3);
  t.record(false);
  t.record(false);
  CHECK(t.state() == EndpointHealth::unknown);  // still routable
  t.record(false);
  CHECK(t.state() == EndpointHealth::unhealthy);
}

TEST_CASE("health: probe intervals stay within the jitter and use all of it") {
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::uint64_t lo = ~0ull, hi = 0;
  for (int i = 0; i < 5000; ++i) {
    std::uint64_t v = jittered_interval(5000, 0.1, u(rng));
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  CHECK(lo >= 4500);
  CHECK(hi <= 5500);
  CHECK(lo < 4550);
  CHECK(hi > 5450);
  CHECK(jittered_interval(1000, 0.0, 0.7) == 1000);
}

TEST_CASE("health: expected status codes and ranges") {
  HealthCheckConfig c;
  c.expected_status = {{200, 299}, {418, 418}};
  CHECK(status_expected(c, 200));
  CHECK(status_expected(c, 204));
  CHECK(status_expected(c, 418));
  CHECK_FALSE(status_expected(c, 301));
  CHECK_FALSE(status_expected(c, 503));
}

#include "config/loader.h"

TEST_CASE("health: endpoints added by DNS are probed at once, removed ones stop") {
  LoadResult r = load_config_string(R"(listeners:
  - name: l
    listen: 127.0.0.1:8080
    routes: [{ name: r, upstream: app }]
upstreams:
  - name: app
    endpoints: [10.9.0.1:80]
    health_check: { interval: 1h }
)",
                                    "h.yaml");
  REQUIRE(r.config);
  UpstreamState state(r.config->upstreams[0], 1);
  auto address = [](const char* text) {
    Address a;
    std::string error;
    REQUIRE(parse_ip_address(text, a, error));
    return a;
  };
  state.set_endpoints(merge_endpoints({}, {address("10.9.0.1:80"), address("10.9.0.2:80")},
                                      r.config->upstreams[0], 1));
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    HealthChecker checker(&loop, {&state});
    checker.sync();
    auto first = state.endpoints();
    CHECK(checker.probes() == 2);
    state.set_endpoints(merge_endpoints(*first, {address("10.9.0.2:80"), address("10.9.0.3:80")},
                                        r.config->upstreams[0], 1));
    checker.sync();
    auto second = state.endpoints();
    CHECK(checker.probes() == 2);
    CHECK_FALSE(checker.probing((*first)[0].get()));  // 10.9.0.1 left
    CHECK(checker.probing((*second)[0].get()));       // 10.9.0.2 stayed
    CHECK(checker.probing((*second)[1].get()));       // 10.9.0.3 joined
    checker.close();
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // lets the closed timers finish (nothing is waiting)
  CHECK(uv_loop_close(&loop) == 0);
}
