#include "upstream/dns.h"

#include <doctest/doctest.h>

#include <map>

#include "config/loader.h"

using namespace bulwark;

namespace {

// Answers lookups from a table, or holds them until answer() is called.
class FakeResolver : public Resolver {
 public:
  std::map<std::string, std::vector<std::string>> table;  // host -> IPs ("" entry: failure)
  bool hold = false;
  std::vector<std::pair<std::string, Callback>> held;
  int lookups = 0;

  void resolve(const std::string& host, int port, Callback cb) override {
    ++lookups;
    if (hold) {
      held.emplace_back(host + ":" + std::to_string(port), std::move(cb));
      return;
    }
    answer(host, port, cb);
  }
  void answer(const std::string& host, int port, const Callback& cb) {
    auto it = table.find(host);
    if (it == table.end() || it->second.empty()) return cb(false, {});
    std::vector<Address> out;
    for (const auto& ip : it->second) {
      Address a;
      std::string error;
      REQUIRE(parse_ip_address(ip + ":" + std::to_string(port), a, error));
      out.push_back(a);
    }
    cb(true, out);
  }
};

Config config_with(const char* endpoints) {
  std::string text = std::string(R"(listeners:
  - name: l
    listen: 127.0.0.1:8080
    routes: [{ name: r, upstream: app }]
upstreams:
  - name: app
    endpoints: )") + endpoints +
                     "\n";
  LoadResult r = load_config_string(text, "dns.yaml");
  REQUIRE(r.config);
  return *r.config;
}

std::vector<std::string> names(const UpstreamState& s) {
  std::vector<std::string> out;
  for (const auto& e : *s.endpoints()) out.push_back(e->name);
  return out;
}

}  // namespace

TEST_CASE("a DNS refresh adds and removes endpoints and keeps the state of those that stay") {
  Config config = config_with("[10.0.0.9:80, app.internal:8080]");
  UpstreamState state(config.upstreams[0], 2);
  int changes = 0;
  state.set_change_hook([&] { ++changes; });
  FakeResolver resolver;
  resolver.table["app.internal"] = {"10.0.0.1", "10.0.0.2"};
  EndpointResolver er(state, resolver);
  CHECK(er.has_names());

  // Start: the IP endpoint as written, the name refreshed through the resolver.
  std::vector<std::string> errors;
  er.refresh();
  CHECK(names(state) == std::vector<std::string>{"10.0.0.9:80", "10.0.0.1:8080", "10.0.0.2:8080"});
  CHECK(changes == 1);
  auto kept = (*state.endpoints())[2];
  kept->per_worker[1].outcomes[0].add(7);

  // The name now answers with one address gone and one new.
  resolver.table["app.internal"] = {"10.0.0.2", "10.0.0.3"};
  er.refresh();
  CHECK(names(state) == std::vector<std::string>{"10.0.0.9:80", "10.0.0.2:8080", "10.0.0.3:8080"});
  CHECK(changes == 2);
  CHECK((*state.endpoints())[1] == kept);  // same object: counters carry over
  CHECK((*state.endpoints())[1]->per_worker[1].outcomes[0].get() == 7);

  // The same answer again: nothing is published.
  er.refresh();
  CHECK(changes == 2);
}

TEST_CASE("a failed lookup keeps the last good answer") {
  Config config = config_with("[app.internal:80]");
  UpstreamState state(config.upstreams[0], 1);
  FakeResolver resolver;
  resolver.table["app.internal"] = {"10.1.1.1"};
  EndpointResolver er(state, resolver);
  er.refresh();
  CHECK(names(state) == std::vector<std::string>{"10.1.1.1:80"});
  resolver.table["app.internal"] = {};  // SERVFAIL
  er.refresh();
  CHECK(names(state) == std::vector<std::string>{"10.1.1.1:80"});
}

TEST_CASE("a round is published once every lookup has answered, and rounds do not overlap") {
  Config config = config_with("[a.internal:80, b.internal:80]");
  UpstreamState state(config.upstreams[0], 1);
  FakeResolver resolver;
  resolver.table["a.internal"] = {"10.2.0.1"};
  resolver.table["b.internal"] = {"10.2.0.2", "10.2.0.1"};
  resolver.hold = true;
  EndpointResolver er(state, resolver);
  int rounds = 0;
  er.on_round_done = [&] { ++rounds; };
  er.refresh();
  er.refresh();  // still out: ignored
  CHECK(resolver.lookups == 2);
  auto held = std::move(resolver.held);
  resolver.answer("a.internal", 80, held[0].second);
  CHECK(state.endpoints()->empty());
  resolver.answer("b.internal", 80, held[1].second);
  CHECK(rounds == 1);
  // 10.2.0.1 from both names appears once.
  CHECK(names(state) == std::vector<std::string>{"10.2.0.1:80", "10.2.0.2:80"});
}

TEST_CASE("a refresh through the real resolver publishes the answer (no false failure)") {
  // Regression: UvResolver reported every answered lookup as a failure (the answer was moved
  // into the callback's parameter before `ok` was computed from it), so a refresh never
  // changed the endpoint list and logged "lookup failed" every dns_refresh.
  uv_loop_t loop;
  uv_loop_init(&loop);
  UvResolver resolver(&loop);
  bool called = false, ok = false;
  std::vector<Address> found;
  resolver.resolve("localhost", 8080, [&](bool success, std::vector<Address> addresses) {
    called = true;
    ok = success;
    found = std::move(addresses);
  });
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(called);
  CHECK(ok);
  REQUIRE_FALSE(found.empty());
  CHECK(found[0].port() == 8080);

  // Through EndpointResolver: the list starts from a stale answer and the refresh replaces it.
  Config config = config_with("[localhost:8080]");
  UpstreamState state(config.upstreams[0], 1);
  EndpointResolver er(state, resolver);
  std::vector<std::string> errors;
  er.start(errors);
  REQUIRE(errors.empty());
  std::vector<std::string> fresh = names(state);
  Address stale;
  std::string error;
  REQUIRE(parse_ip_address("10.9.9.9:8080", stale, error));
  state.set_endpoints(merge_endpoints(*state.endpoints(), {stale}, state.config(), 1));
  CHECK(names(state) == std::vector<std::string>{"10.9.9.9:8080"});
  int rounds = 0;
  er.on_round_done = [&] { ++rounds; };
  er.refresh();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(rounds == 1);
  CHECK(er.lookups(true) == 1);
  CHECK(er.lookups(false) == 0);
  CHECK(names(state) == fresh);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("bulkhead counters hold for the process") {
  Config config = config_with("[10.0.0.1:80]");
  config.upstreams[0].limits.max_requests = 2;
  config.upstreams[0].limits.max_pending = 1;
  UpstreamState state(config.upstreams[0], 4);
  CHECK(state.try_admit());
  CHECK(state.try_admit());
  CHECK_FALSE(state.try_admit());
  CHECK(state.in_flight() == 2);
  CHECK(state.try_enqueue());
  CHECK_FALSE(state.try_enqueue());
  state.dequeue();
  state.release();
  CHECK(state.try_admit());
  CHECK(state.pending() == 0);
}
