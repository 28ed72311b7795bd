#include <doctest/doctest.h>

#include <random>

#include "upstream/health.h"

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
