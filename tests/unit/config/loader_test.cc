#include "config/loader.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "config/json.h"
#include "config/load_errors.h"

using namespace bulwark;

namespace {

const char* kMinimal = R"(listeners:
  - name: inbound
    listen: 127.0.0.1:8080
    routes:
      - name: all
        upstream: app
upstreams:
  - name: app
    endpoints: [127.0.0.1:3000]
)";

bool has_error(const LoadResult& r, const std::string& needle) {
  return std::any_of(r.errors.begin(), r.errors.end(),
                     [&](const std::string& e) { return e.find(needle) != std::string::npos; });
}

using test::errors_text;

}  // namespace

TEST_CASE("a minimal config loads with documented defaults") {
  LoadResult r = load_config_string(kMinimal, "min.yaml");
  REQUIRE_MESSAGE(r.config, errors_text(r));
  const Config& c = *r.config;
  CHECK(c.workers == 1);
  CHECK(c.admin_listen == "127.0.0.1:9901");
  CHECK(c.drain_timeout_ms == 20000);
  CHECK(c.drain_delay_ms == 0);  // no delay unless configured
  CHECK(c.access_log_path == "stdout");
  REQUIRE(c.listeners.size() == 1);
  const ListenerConfig& l = c.listeners[0];
  CHECK(l.header_timeout_ms == 10000);
  CHECK(l.idle_timeout_ms == 60000);
  CHECK(l.body_idle_timeout_ms == 30000);
  CHECK(l.max_connections == 10000);
  CHECK(l.max_header_bytes == 64 * 1024);
  CHECK(l.max_headers == 100);
  CHECK(l.max_body_bytes == 10 * 1024 * 1024);
  CHECK(l.routes[0].match.prefix == "/");
  CHECK(l.routes[0].timeout_ms == 15000);
  const UpstreamConfig& u = c.upstreams[0];
  CHECK(u.balance == "least_request");
  CHECK(u.connect_timeout_ms == 1000);
  CHECK(u.max_response_header_bytes == 64 * 1024);
  CHECK(u.pool.max_connections == 1024);
  CHECK(u.pool.max_idle == 128);
  CHECK(u.pool.idle_timeout_ms == 60000);
  CHECK(u.endpoints[0].address.to_string() == "127.0.0.1:3000");
}

TEST_CASE("every field of a full listener and upstream is read") {
  const char* text = R"(admin: { listen: 127.0.0.1:9000 }
workers: 2
drain: { delay: 4s, timeout: 3s }
access_log: { path: "off", format: json }
listeners:
  - name: inbound
    listen: 0.0.0.0:8080
    timeouts: { header: 2s, idle: 30s, body_idle: 5s }
    limits: { max_connections: 50, max_header_bytes: 8KiB, max_headers: 40, max_body_bytes: 1MiB }
    routes:
      - name: api
        match: { prefix: /api, host: "*.example.com", methods: [GET, POST], headers: { X-Canary: "1" } }
        upstream: app
        timeout: 2s
upstreams:
  - name: app
    endpoints: [127.0.0.1:3000, "[::1]:3001"]
    dns_refresh: 10s
    balance: round_robin
    connect_timeout: 250ms
    max_response_header_bytes: 16KiB
    pool: { max_connections: 10, max_idle: 5, idle_timeout: 5s }
)";
  LoadResult r = load_config_string(text, "full.yaml");
  REQUIRE_MESSAGE(r.config, errors_text(r));
  const Config& c = *r.config;
  CHECK(c.workers == 2);
  CHECK(c.drain_timeout_ms == 3000);
  CHECK(c.drain_delay_ms == 4000);
  CHECK(c.access_log_path == "off");
  const auto& l = c.listeners[0];
  CHECK(l.header_timeout_ms == 2000);
  CHECK(l.body_idle_timeout_ms == 5000);
  CHECK(l.max_connections == 50);
  CHECK(l.max_header_bytes == 8192);
  CHECK(l.max_headers == 40);
  const auto& m = l.routes[0].match;
  CHECK(m.host == "*.example.com");
  CHECK(m.methods == std::vector<std::string>{"GET", "POST"});
  REQUIRE(m.headers.size() == 1);
  CHECK(m.headers[0].first == "x-canary");
  const auto& u = c.upstreams[0];
  CHECK(u.endpoints[1].address.to_string() == "[::1]:3001");
  CHECK(u.pool.max_idle == 5);
  CHECK(u.connect_timeout_ms == 250);
  CHECK(u.max_response_header_bytes == 16 * 1024);
  std::string json = config_to_json(c);
  CHECK(json.find("\"max_response_header_bytes\":16384") != std::string::npos);
  CHECK(json.find("\"balance\":\"round_robin\"") != std::string::npos);
  CHECK(json.find("\"prefix\":\"/api\"") != std::string::npos);
  CHECK(json.find("\"body_idle\":\"5000ms\"") != std::string::npos);
}

TEST_CASE("timeouts.body_idle: a duration above zero") {
  const char* text = R"(listeners:
  - name: inbound
    listen: 127.0.0.1:8080
    timeouts: { body_idle: 0 }
    routes: [{ name: all, upstream: app }]
upstreams:
  - name: app
    endpoints: [127.0.0.1:3000]
)";
  LoadResult r = load_config_string(text, "zero.yaml");
  CHECK_FALSE(r.config);
  INFO(errors_text(r));
  CHECK(has_error(r, "zero.yaml:4:28: listeners[0].timeouts.body_idle: must be greater than zero"));
}

TEST_CASE("errors carry file, line, column and key path, and all are reported") {
  const char* text = R"(workers: many
listeners:
  - name: inbound
    listen: 127.0.0.1:99999
    timeouts: { header: 10 }
    routes:
      - name: api
        upstream: missing
        timout: 5s
upstreams:
  - name: app
    endpoints: [127.0.0.1:3000]
    balance: fastest
)";
  LoadResult r = load_config_string(text, "bad.yaml");
  CHECK_FALSE(r.config);
  INFO(errors_text(r));
  CHECK(has_error(r, "bad.yaml:1:10: workers: expected a whole number"));
  CHECK(has_error(r, "bad.yaml:4:13: listeners[0].listen: invalid port '99999'"));
  CHECK(has_error(r, "bad.yaml:5:25: listeners[0].timeouts.header: invalid duration '10'"));
  CHECK(
      has_error(r, "bad.yaml:8:19: listeners[0].routes[0].upstream: no upstream named 'missing'"));
  CHECK(has_error(r, "bad.yaml:9:9: listeners[0].routes[0].timout: unknown key"));
  CHECK(has_error(r, "bad.yaml:13:14: upstreams[0].balance: must be round_robin"));
  CHECK(r.errors.size() == 6);
}

TEST_CASE("limits.max_headers is bounded") {
  for (const char* value : {"0", "10001"}) {
    std::string text = std::string(R"(listeners:
  - name: inbound
    listen: 127.0.0.1:8080
    limits: { max_headers: )") +
                       value + R"( }
    routes: [{ name: all, upstream: app }]
upstreams:
  - name: app
    endpoints: [127.0.0.1:3000]
)";
    LoadResult r = load_config_string(text, "limits.yaml");
    CHECK_FALSE(r.config);
    CHECK(errors_text(r).find("listeners[0].limits.max_headers") != std::string::npos);
  }
}

TEST_CASE("duplicates, missing keys and wrong types") {
  const char* text = R"(listeners:
  - name: a
    listen: 127.0.0.1:8080
    routes:
      - name: r
        upstream: app
      - name: r
        upstream: app
  - name: a
    listen: 127.0.0.1:8080
    routes: []
  - listen: 127.0.0.1:8082
    name: c
    name: d
    routes: [{ name: x, upstream: app }]
upstreams:
  - name: app
    endpoints: 127.0.0.1:3000
  - name: app
    endpoints: [127.0.0.1:3000, 127.0.0.1:3000]
  - endpoints: [nonsense]
)";
  LoadResult r = load_config_string(text, "dup.yaml");
  CHECK_FALSE(r.config);
  INFO(errors_text(r));
  CHECK(has_error(r, "listeners[0].routes[1].name: duplicate route name 'r'"));
  CHECK(has_error(r, "listeners[1].name: duplicate listener name 'a'"));
  CHECK(has_error(r, "listeners[1].listen: address 127.0.0.1:8080 is used by another listener"));
  CHECK(has_error(r, "listeners[1].routes: expected a non-empty list"));
  CHECK(has_error(r, "dup.yaml:14:5: listeners[2].name: duplicate key"));
  CHECK(has_error(r, "upstreams[0].endpoints: expected a non-empty list"));
  CHECK(has_error(r, "upstreams[1].name: duplicate upstream name 'app'"));
  CHECK(has_error(r, "upstreams[1].endpoints[1]: duplicate endpoint 127.0.0.1:3000"));
  CHECK(has_error(r, "upstreams[2].name: required key is missing"));
  CHECK(has_error(r, "upstreams[2].endpoints[0]: expected HOST:PORT"));
}

TEST_CASE("YAML syntax errors are reported with their position") {
  LoadResult r = load_config_string("listeners: [\n  - name: x\n", "syntax.yaml");
  CHECK_FALSE(r.config);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].rfind("syntax.yaml:", 0) == 0);
  CHECK(r.errors[0].find("YAML syntax error") != std::string::npos);
}

TEST_CASE("an empty or scalar document is rejected") {
  CHECK(has_error(load_config_string("", "e.yaml"), "(root): the file has no settings"));
  CHECK(has_error(load_config_string("# nothing\n", "e.yaml"), "(root): the file has no settings"));
  CHECK(has_error(load_config_string("42", "e.yaml"), "(root): expected a mapping"));
}

TEST_CASE("resilience blocks are validated field by field") {
  std::string text =
      std::string(kMinimal) +
      R"(    circuit_breaker: { consecutive_failures: 5, failure_on: [reset, 5xx, teapot] }
    health_check: { type: grpc }
    load_shedding: { algorithm: magic }
)";
  LoadResult r = load_config_string(text, "res.yaml");
  CHECK_FALSE(r.config);
  INFO(errors_text(r));
  CHECK(has_error(r, "upstreams[0].circuit_breaker.failure_on: unknown failure kind 'teapot'"));
  CHECK(has_error(r, "upstreams[0].health_check.type: must be http or tcp"));
  CHECK(has_error(r,
                  "upstreams[0].load_shedding.algorithm: must be gradient2, aimd, vegas or fixed"));
}

TEST_CASE("load_shedding: defaults, every field, and bad values") {
  LoadResult r = load_config_string(std::string(kMinimal) + "    load_shedding: {}\n", "ls.yaml");
  REQUIRE_MESSAGE(r.config, errors_text(r));
  const LoadSheddingConfig& d = *r.config->upstreams[0].load_shedding;
  CHECK(d.algorithm == "gradient2");
  CHECK(d.initial_limit == 20);
  CHECK(d.min_limit == 5);
  CHECK(d.max_limit == 1000);
  CHECK(d.queue_size == 100);
  CHECK(d.queue_timeout_ms == 50);
  CHECK(d.priority_header == "x-priority");
  CHECK(d.critical_reserve == doctest::Approx(0.1));
  CHECK(d.enforce);

  r = load_config_string(std::string(kMinimal) + R"(    load_shedding:
      algorithm: vegas
      initial_limit: 8
      min_limit: 2
      max_limit: 64
      queue: { size: 0, timeout: 2s }
      priority_header: X-Class
      critical_reserve: 25%
      enforce: false
)",
                         "ls.yaml");
  REQUIRE_MESSAGE(r.config, errors_text(r));
  const LoadSheddingConfig& c = *r.config->upstreams[0].load_shedding;
  CHECK(c.algorithm == "vegas");
  CHECK(c.initial_limit == 8);
  CHECK(c.min_limit == 2);
  CHECK(c.max_limit == 64);
  CHECK(c.queue_size == 0);
  CHECK(c.queue_timeout_ms == 2000);
  CHECK(c.priority_header == "x-class");
  CHECK(c.critical_reserve == doctest::Approx(0.25));
  CHECK_FALSE(c.enforce);

  r = load_config_string(std::string(kMinimal) + R"(    load_shedding:
      min_limit: 50
      max_limit: 10
      critical_reserve: 100%
      queue: { depth: 3 }
)",
                         "ls.yaml");
  CHECK_FALSE(r.config);
  INFO(errors_text(r));
  CHECK(has_error(r, "upstreams[0].load_shedding.min_limit: must not exceed max_limit"));
  CHECK(has_error(r, "upstreams[0].load_shedding.critical_reserve: must be below 1 (100%)"));
  CHECK(has_error(r, "upstreams[0].load_shedding.queue.depth"));

  // The default min_limit (5) holds for an initial_limit written below it: said, not clamped.
  r = load_config_string(std::string(kMinimal) +
                             "    load_shedding: { algorithm: fixed, initial_limit: 4 }\n",
                         "ls.yaml");
  CHECK_FALSE(r.config);
  CHECK(has_error(r, "upstreams[0].load_shedding.initial_limit: must be within [min_limit, "
                     "max_limit] (5, 1000)"));
}

TEST_CASE("circuit_breaker: defaults and failure_on") {
  std::string text =
      std::string(kMinimal) +
      R"(    circuit_breaker: { open_for: 2s, slow_call: { duration: 500ms }, failure_on: [connect-failure, 429] }
)";
  LoadResult r = load_config_string(text, "cb.yaml");
  REQUIRE_MESSAGE(r.config, errors_text(r));
  const auto& cb = *r.config->upstreams[0].circuit_breaker;
  CHECK(cb.consecutive_failures == 5);
  CHECK(cb.failure_rate == doctest::Approx(0.5));
  CHECK(cb.window_ms == 10000);
  CHECK(cb.min_requests == 20);
  CHECK(cb.slow_call_ms == 500);
  CHECK(cb.slow_call_rate == doctest::Approx(1.0));
  CHECK(cb.open_for_ms == 2000);
  CHECK(cb.max_open_for_ms == 300000);
  CHECK(cb.half_open_requests == 3);
  CHECK(cb.max_ejected == doctest::Approx(0.5));
  CHECK(cb.half_open_on_health_check);
  CHECK(cb.on_connect_failure);
  CHECK_FALSE(cb.on_reset);
  CHECK_FALSE(cb.on_5xx);
  CHECK(cb.counts_status(429));
  CHECK_FALSE(cb.counts_status(503));

  r = load_config_string(std::string(kMinimal) +
                             "    circuit_breaker: { half_open_on_health_check: false }\n",
                         "cb.yaml");
  REQUIRE_MESSAGE(r.config, errors_text(r));
  CHECK_FALSE(r.config->upstreams[0].circuit_breaker->half_open_on_health_check);
  r = load_config_string(std::string(kMinimal) +
                             "    circuit_breaker: { half_open_on_health_check: 3 }\n",
                         "cb.yaml");
  CHECK_FALSE(r.config);
}

TEST_CASE("route match validation") {
  std::string text = R"(listeners:
  - name: inbound
    listen: 127.0.0.1:8080
    routes:
      - name: a
        match: { prefix: api, host: "a.*.com", methods: [get], headers: [x] }
        upstream: app
upstreams:
  - name: app
    endpoints: [127.0.0.1:3000]
)";
  LoadResult r = load_config_string(text, "m.yaml");
  INFO(errors_text(r));
  CHECK(has_error(r, "match.prefix: must start with '/'"));
  CHECK(has_error(r, "match.host: a wildcard is only allowed"));
  CHECK(has_error(r, "match.methods: method 'get' must be an upper-case token"));
  CHECK(has_error(r, "match.headers: expected a mapping"));
}

TEST_CASE("max_response_header_bytes is a size between 256 and 1MiB") {
  for (const char* bad : {"100", "2MiB", "lots"}) {
    std::string text = std::string(kMinimal) + "    max_response_header_bytes: " + bad + "\n";
    LoadResult r = load_config_string(text, "limit.yaml");
    INFO(bad, errors_text(r));
    CHECK_FALSE(r.config);
    CHECK(has_error(r, "upstreams[0].max_response_header_bytes: "));
  }
  LoadResult r = load_config_string(std::string(kMinimal) + "    max_response_header_bytes: 1MiB\n",
                                    "limit.yaml");
  REQUIRE(r.config);
  CHECK(r.config->upstreams[0].max_response_header_bytes == 1024 * 1024);
}

TEST_CASE("a missing file is an error, not a crash") {
  LoadResult r = load_config_file("/nonexistent/bulwark.yaml");
  CHECK_FALSE(r.config);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0] ==
        "/nonexistent/bulwark.yaml:0:0: (root): cannot open the file: No such file or directory "
        "(ENOENT)");
}

TEST_CASE("a file that cannot be read says why: a directory, an empty file") {
  // Regression: these said `FILE:0:0` with no reason ("expected a mapping, found nothing").
  char dir[] = "/tmp/bulwark-loader-XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  LoadResult r = load_config_file(dir);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0] ==
        std::string(dir) + ":0:0: (root): cannot read the file: Is a directory (EISDIR)");

  std::string empty = std::string(dir) + "/empty.yaml";
  FILE* f = std::fopen(empty.c_str(), "w");
  REQUIRE(f);
  std::fputs(" \n\n", f);
  std::fclose(f);
  r = load_config_file(empty);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].rfind(empty + ":0:0: (root): the file is empty", 0) == 0);
  std::remove(empty.c_str());
  rmdir(dir);
}
