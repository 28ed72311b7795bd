// The status page's history: quantiles from histogram deltas, per-second samples from the
// workers' counters (across reloads), and state transitions. Times are given, not read.
#include "admin/history.h"

#include <doctest/doctest.h>

#include "generation.h"
#include "net/address.h"

namespace bulwark {
namespace {

Config one_route(const std::string& route, bool health = false) {
  Config c;
  ListenerConfig l;
  l.name = "main";
  RouteConfig r;
  r.name = route;
  r.upstream = "app";
  l.routes.push_back(r);
  c.listeners.push_back(l);
  UpstreamConfig u;
  u.name = "app";
  if (health) u.health_check = HealthCheckConfig{};
  c.upstreams.push_back(u);
  return c;
}

void answer(RouteStats& r, int status, std::uint64_t n, std::uint64_t ns) {
  for (std::uint64_t i = 0; i < n; ++i) {
    r.count_status(status);
    r.duration.observe_ns(ns);
  }
}

}  // namespace

TEST_CASE("history: quantiles interpolate within the bucket, like histogram_quantile") {
  std::array<std::uint64_t, kDurationBuckets.size() + 1> counts{};
  CHECK(bucket_quantile(counts, 0.5) == -1);  // nothing observed
  counts[2] = 100;                            // all in (0.001, 0.0025]
  CHECK(bucket_quantile(counts, 0.5) == doctest::Approx(0.00175));
  CHECK(bucket_quantile(counts, 0.99) == doctest::Approx(0.001 + 0.0015 * 0.99));
  counts[0] = 100;  // half now in (0, 0.0005]
  CHECK(bucket_quantile(counts, 0.25) == doctest::Approx(0.00025));
  CHECK(bucket_quantile(counts, 0.99) == doctest::Approx(0.001 + 0.0015 * 0.98));
  std::array<std::uint64_t, kDurationBuckets.size() + 1> slow{};
  slow[kDurationBuckets.size()] = 5;  // above the last bound: its lower bound
  CHECK(bucket_quantile(slow, 0.5) == doctest::Approx(kDurationBuckets.back()));
}

TEST_CASE("history: a sample per tick from the counters' deltas, across a reload") {
  StatsRegistry registry(2);
  auto g1 = build_generation(std::make_shared<const Config>(one_route("a")), nullptr, registry);
  StatusHistory h;
  answer(*g1->workers[0].routes[0][0], 200, 50, 1'000'000);  // before the baseline: not counted
  h.tick(*g1, 10'000);
  CHECK(h.json() == "{\"samples\":[],\"events\":[]}");
  answer(*g1->workers[0].routes[0][0], 200, 30, 1'500'000);  // 1.5 ms
  answer(*g1->workers[1].routes[0][0], 503, 10, 1'500'000);
  answer(g1->workers[1].listeners[0]->unmatched, 404, 10, 200'000);
  h.tick(*g1, 12'000);  // two seconds: 50 requests, 10 of them 5xx
  std::string j = h.json();
  CHECK(j.find("[12000,25.000,5.000,") != std::string::npos);

  // A reload removes "a" (with all its counts) and adds "b": nothing goes negative, and what
  // "b" counted since it appeared is in the next sample.
  auto g2 = build_generation(std::make_shared<const Config>(one_route("b")), g1.get(), registry);
  answer(*g2->workers[0].routes[0][0], 200, 4, 1'000'000);
  h.tick(*g2, 13'000);
  j = h.json();
  CHECK(j.find("[13000,4.000,0.000,") != std::string::npos);
  h.tick(*g2, 14'000);  // nothing: a sample of zero, no latency (-1)
  CHECK(h.json().find("[14000,0.000,0.000,-1.000,-1.000]") != std::string::npos);
}

TEST_CASE("history: the ring keeps the last samples; transitions become events") {
  StatsRegistry registry(1);
  auto g = build_generation(std::make_shared<const Config>(one_route("a", true)), nullptr, registry);
  Address addr;
  std::string error;
  REQUIRE(parse_ip_address("127.0.0.1:9", addr, error));
  UpstreamState& app = *g->upstreams[0];
  app.set_endpoints(merge_endpoints(*app.endpoints(), {addr}, app.config(), 1));
  StatusHistory h;
  for (std::uint64_t t = 0; t <= StatusHistory::kSamples + 10; ++t) h.tick(*g, 1000 * t);
  std::string j = h.json();
  // The oldest kept is the 11th second's sample (the first tick only set the baseline).
  CHECK(j.find("\"samples\":[[11000,") != std::string::npos);
  CHECK(j.find("[310000,") != std::string::npos);

  (*app.endpoints())[0]->health.store(static_cast<int>(EndpointHealth::unhealthy));
  h.tick(*g, 400'000);
  h.add_event(400'500, "reload", "config", "generation 1", "generation 2");
  j = h.json();
  CHECK(j.find("{\"time_ms\":400000,\"kind\":\"health\",\"subject\":\"app/127.0.0.1:9\","
               "\"from\":\"unknown\",\"to\":\"unhealthy\"}") != std::string::npos);
  CHECK(j.find("\"kind\":\"reload\"") > j.find("\"kind\":\"health\""));  // oldest first
  h.tick(*g, 401'000);  // no change: no new event
  CHECK(h.json().find("\"time_ms\":401000") == std::string::npos);
}

}  // namespace bulwark
