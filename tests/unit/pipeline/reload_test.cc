// Reload: what a new generation keeps of the previous one (build_generation, StatsRegistry),
// and a worker switching to it (Worker::reload) with connections and requests under way.
#include <doctest/doctest.h>

#include "generation.h"
#include "pipeline/proxy_fixture.h"

namespace bulwark {
namespace {

Config two_routes() {
  Config c;
  ListenerConfig l;
  l.name = "main";
  RouteConfig a;
  a.name = "all";
  a.upstream = "app";
  l.routes.push_back(a);
  c.listeners.push_back(l);
  UpstreamConfig u;
  u.name = "app";
  c.upstreams.push_back(u);
  return c;
}

std::shared_ptr<const Config> shared(Config c) { return std::make_shared<const Config>(std::move(c)); }

}  // namespace

TEST_CASE("generation: unchanged upstreams and routes keep their state, changed ones start fresh") {
  StatsRegistry stats(2);
  Config a = two_routes();
  auto g1 = build_generation(shared(a), nullptr, stats);
  CHECK(g1->number == 1);
  REQUIRE(g1->workers.size() == 2);

  // b: "app" unchanged, a new upstream and route; "all" unchanged.
  Config b = a;
  UpstreamConfig other;
  other.name = "other";
  b.upstreams.push_back(other);
  RouteConfig r;
  r.name = "b";
  r.upstream = "other";
  r.match.prefix = "/b";
  b.listeners[0].routes.insert(b.listeners[0].routes.begin(), r);
  ReloadSummary summary;
  auto g2 = build_generation(shared(b), g1.get(), stats, &summary);
  CHECK(g2->number == 2);
  CHECK(g2->upstreams[0] == g1->upstreams[0]);  // same UpstreamState: breakers, health, ...
  CHECK(g2->upstreams[1] != g1->upstreams[0]);
  CHECK(g2->routes[0][1] == g1->routes[0][0]);  // "all", now second: same RouteState
  CHECK(g2->route_upstreams[0][0] == 1);
  CHECK(g2->route_upstreams[0][1] == 0);
  CHECK(summary.upstreams_kept == 1);
  CHECK(summary.upstreams_new == 1);
  CHECK(summary.routes_kept == 1);
  CHECK(summary.routes_new == 1);
  // Counters follow names: "all" keeps its RouteStats on each worker; the listener its own.
  for (std::size_t w = 0; w < 2; ++w) {
    CHECK(g2->workers[w].routes[0][1] == g1->workers[w].routes[0][0]);
    CHECK(g2->workers[w].listeners[0] == g1->workers[w].listeners[0]);
    // The last entry is the listener's unmatched requests, inside its ListenerStats.
    CHECK(g2->workers[w].routes[0].back().get() == &g2->workers[w].listeners[0]->unmatched);
  }
  CHECK(g2->workers[0].routes[0][1] != g2->workers[1].routes[0][1]);  // one per worker

  // c: "app" changed (its pool): new state; the route to it too, though its block is the same
  // (a retry budget counts one upstream's requests).
  Config c = a;
  c.upstreams[0].pool.max_connections = 7;
  auto g3 = build_generation(shared(c), g2.get(), stats);
  CHECK(g3->upstreams[0] != g2->upstreams[0]);
  CHECK(g3->routes[0][0] != g2->routes[0][1]);
  CHECK(g3->upstreams[0]->config().pool.max_connections == 7);
  // The route's counters are kept all the same (by name).
  CHECK(g3->workers[0].routes[0][0] == g2->workers[0].routes[0][1]);

  // A route that went away and comes back starts its counters again.
  auto b_stats = g2->workers[0].routes[0][0];
  b_stats->codes[100].add();
  auto g4 = build_generation(shared(b), g3.get(), stats);
  CHECK(g4->workers[0].routes[0][0] != b_stats);
  CHECK(g4->workers[0].routes[0][0]->codes[100].get() == 0);
}

TEST_CASE("generation: the state outlives the config it was made from") {
  StatsRegistry stats(1);
  auto g1 = build_generation(shared(two_routes()), nullptr, stats);
  std::shared_ptr<UpstreamState> kept = g1->upstreams[0];
  auto g2 = build_generation(shared(two_routes()), g1.get(), stats);
  g1.reset();  // the first config is gone
  CHECK(g2->upstreams[0] == kept);
  CHECK(kept->config().name == "app");
  CHECK(g2->routes[0][0]->config.upstream == "app");
}

namespace {

using test::get;
using test::ok;

// The fixture's config with its upstream "app" replaced by "two", whose one endpoint is
// `backend`, for a reload of the fixture's worker.
std::shared_ptr<const Generation> to_two(test::ProxyFixture& f, test::LoopbackBackend& backend) {
  Config next = *f.generation->config;
  next.upstreams[0].name = "two";
  next.listeners[0].routes[0].upstream = "two";
  auto g = build_generation(shared(next), f.generation.get(), *f.registry);
  UpstreamState& two = *g->upstreams[0];
  two.set_endpoints(merge_endpoints(*two.endpoints(), {backend.address()}, two.config(), 1));
  return g;
}

}  // namespace

TEST_CASE("worker reload: a keep-alive connection's next request uses the new routes") {
  test::ProxyFixture f;
  f.backend->auto_response = ok("one");
  test::TestClient& c = f.connect();
  c.send(get("/x"));
  CHECK(f.response(c).body == "one");

  test::LoopbackBackend second(f.loop);
  second.auto_response = ok("two");
  auto g2 = to_two(f, second);
  REQUIRE(f.worker->reload(g2, {-1}, {"main"}));
  f.run_until([&] { return f.worker->generation() == 2; });
  CHECK(&f.listener() == &f.worker->listener(0));  // the same socket and connection
  c.send(get("/y"));
  CHECK(f.response(c).body == "two");
  // Nothing pins the first generation: it is gone, and "app"'s Upstream with it (its idle
  // pooled connection to the first backend is closed).
  f.settle();
  CHECK(f.worker->generations() == 1);
  f.run_until([&] { return f.backend->conn(0).eof; });
  f.generation = g2;  // the fixture closes the current upstreams at its end
  f.close_upstreams();
  second.close();
  f.settle();
}

TEST_CASE("worker reload: a request in flight finishes under the generation it began in") {
  test::ProxyFixture f;
  test::TestClient& c = f.connect();
  c.send(get("/slow"));
  f.run_until([&] { return f.backend->accepted() == 1 && !f.backend->conn(0).received.empty(); });

  test::LoopbackBackend second(f.loop);
  second.auto_response = ok("two");
  auto g2 = to_two(f, second);
  REQUIRE(f.worker->reload(g2, {-1}, {"main"}));
  f.run_until([&] { return f.worker->generation() == 2; });
  CHECK(f.worker->generations() == 2);  // the request pins the first
  f.backend->conn(0).write(ok("one"));
  CHECK(f.response(c).body == "one");  // answered by the upstream it was sent to
  f.settle();
  CHECK(f.worker->generations() == 1);
  // The upstream of the first generation has gone: its pooled connection is closed.
  f.run_until([&] { return f.backend->conn(0).eof; });
  c.send(get("/next"));
  CHECK(f.response(c).body == "two");
  f.generation = g2;
  f.close_upstreams();
  second.close();
  f.settle();
}

TEST_CASE("worker reload: a listener that is gone stops accepting; its connections finish") {
  test::ProxyFixture f;
  f.backend->auto_response = ok("one");
  test::TestClient& idle = f.connect();
  idle.send(get("/x"));
  CHECK(f.response(idle).body == "one");
  // A config without the listener "main" (one named "other", never opened here).
  Config next = *f.generation->config;
  next.listeners[0].name = "other";
  auto g2 = build_generation(shared(next), f.generation.get(), *f.registry);
  REQUIRE(f.worker->reload(g2, {-1}, {""}));
  // The idle keep-alive connection of the removed listener is closed.
  f.run_until([&] { return idle.eof; });
  f.settle();
  CHECK(f.worker->generations() == 1);
  f.generation = g2;
}

}  // namespace bulwark
