// GET /config (config/json.h): the effective configuration, every block with its defaults.
// The strongest check of names and notations: what /config shows is itself a valid config
// file (JSON is YAML) that loads back to the same configuration.
#include "config/json.h"

#include <doctest/doctest.h>

#include <string>

#include "config/load_errors.h"
#include "config/loader.h"

using namespace bulwark;

using test::errors_text;

TEST_CASE("/config shows every block, and what it shows loads back to the same config") {
  const char* text = R"(
admin: { listen: 127.0.0.1:9901 }
workers: 2
drain: { delay: 5s, timeout: 20s }
access_log: { path: "off" }
redis: { address: 127.0.0.1:6379, timeout: 30ms }
listeners:
  - name: inbound
    listen: 127.0.0.1:8080
    routes:
      - name: api
        match: { prefix: /api, methods: [GET, POST], headers: { x-tenant: a } }
        upstream: app
        timeout: 2s
        rate_limit: { rate: 10000000/s, burst: 500, key: "header:x-user", scope: global, on_redis_failure: deny }
        retry: { attempts: 3, on: [reset, "503"], per_try_timeout: 500ms, backoff: { base: 10ms, max: 100ms }, budget: { ratio: 25%, min_per_second: 5 } }
      - name: rest
        match: { prefix: / }
        upstream: app
upstreams:
  - name: app
    endpoints: [127.0.0.1:3000, 127.0.0.1:3001]
    limits: { max_requests: 100, max_pending: 10, pending_timeout: 250ms }
    circuit_breaker: { consecutive_failures: 7, slow_call: { duration: 1s, rate: 50% }, failure_on: [reset, "429"] }
    health_check: { type: http, path: /ready, interval: 2s, expected_status: ["200", "300-302"] }
    load_shedding: { algorithm: vegas, initial_limit: 30, max_limit: 500, queue: { size: 50, timeout: 20ms }, critical_reserve: 20%, enforce: false }
)";
  LoadResult first = load_config_string(text, "full.yaml");
  REQUIRE_MESSAGE(first.config, errors_text(first));
  std::string json = config_to_json(*first.config);
  for (const char* key :
       {"\"rate_limit\":", "\"retry\":", "\"limits\":", "\"circuit_breaker\":", "\"health_check\":",
        "\"load_shedding\":", "\"rate\":\"10000000/s\"", "\"failure_on\":[\"reset\",\"429\"]",
        "\"expected_status\":[\"200\",\"300-302\"]", "\"critical_reserve\":\"20%\"",
        "\"slow_call\":{\"duration\":\"1000ms\",\"rate\":\"50%\"}", "\"delay\":\"5000ms\""})
    CHECK_MESSAGE(json.find(key) != std::string::npos, key << " missing from " << json);
  LoadResult again = load_config_string(json, "config.json");
  REQUIRE_MESSAGE(again.config, errors_text(again) << json);
  CHECK(config_to_json(*again.config) == json);
}

TEST_CASE("/config of a minimal config fills in the defaults of the blocks it has, no others") {
  LoadResult r = load_config_string(R"(
listeners:
  - name: l
    listen: 127.0.0.1:8080
    routes: [ { name: all, match: { prefix: / }, upstream: app } ]
upstreams:
  - name: app
    endpoints: [127.0.0.1:3000]
    circuit_breaker: {}
)",
                                    "min.yaml");
  REQUIRE_MESSAGE(r.config, errors_text(r));
  std::string json = config_to_json(*r.config);
  CHECK(json.find("\"circuit_breaker\":{\"consecutive_failures\":5,\"failure_rate\":\"50%\"") !=
        std::string::npos);
  CHECK(json.find("\"failure_on\":[\"connect-failure\",\"reset\",\"timeout\",\"5xx\"]") !=
        std::string::npos);
  CHECK(json.find("\"rate_limit\"") == std::string::npos);
  CHECK(json.find("\"load_shedding\"") == std::string::npos);
  CHECK(json.find("\"limits\":{\"max_requests\":1024,\"max_pending\":1024") != std::string::npos);
}
