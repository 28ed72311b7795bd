// Warnings about risky but valid policies (config/lint.h): one test per warning, with the
// exact FILE:LINE:COL: key.path prefix, the cases that must not warn, and a clean config.
#include "config/lint.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "config/load_errors.h"
#include "config/loader.h"

using namespace bulwark;

namespace {

// Lines 1-6 are the listener and its route "api"; `route` goes on from line 7 (8 spaces in),
// then the upstream "app" (3 lines), then `upstream` (4 spaces in).
std::string yaml(const std::string& route, const std::string& upstream = "") {
  return "listeners:\n"
         "  - name: in\n"
         "    listen: 127.0.0.1:8080\n"
         "    routes:\n"
         "      - name: api\n"
         "        upstream: app\n" +
         route +
         "upstreams:\n"
         "  - name: app\n"
         "    endpoints: [127.0.0.1:3000]\n" +
         upstream;
}

std::vector<std::string> lint(const std::string& text) {
  LoadResult r = load_config_string(text, "t.yaml");
  REQUIRE_MESSAGE(r.config, test::errors_text(r));
  return lint_config(*r.config);
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

// Exactly one warning, starting with `prefix` and containing `words`.
void check_one(const std::vector<std::string>& w, const std::string& prefix,
               const std::string& words) {
  REQUIRE_MESSAGE(w.size() == 1, joined(w));
  CHECK_MESSAGE(w[0].rfind(prefix, 0) == 0, w[0]);
  CHECK_MESSAGE(w[0].find(words) != std::string::npos, w[0]);
}

}  // namespace

TEST_CASE("lint: a config with every control set sensibly has no warning") {
  CHECK(lint(yaml("")).empty());
  auto w = lint(yaml(
      "        timeout: 10s\n"
      "        rate_limit: { rate: 100/s, burst: 200 }\n"
      "        retry:\n"
      "          attempts: 3\n"
      "          per_try_timeout: 2s\n"
      "          methods: all\n"
      "          on: [connect-failure, reset]\n"
      "          budget: { ratio: 20%, min_per_second: 10 }\n",
      "    circuit_breaker: { open_for: 30s, min_requests: 20 }\n"
      "    health_check: { interval: 5s }\n"
      "    load_shedding: { queue: { timeout: 100ms } }\n"));
  CHECK_MESSAGE(w.empty(), joined(w));
}

TEST_CASE("lint 1: a retry budget of zero allows no retry") {
  check_one(lint(yaml("        retry:\n"
                      "          budget: { ratio: 0%, min_per_second: 0 }\n")),
            "t.yaml:8:11: listeners[0].routes[0].retry.budget: budget.ratio and "
            "budget.min_per_second are both 0: the budget allows no retry at all",
            "never retries");
}

TEST_CASE("lint 1: a retry budget that does not limit retries") {
  check_one(lint(yaml("        retry:\n"
                      "          budget:\n"
                      "            ratio: 100%\n")),
            "t.yaml:9:13: listeners[0].routes[0].retry.budget.ratio: budget.ratio 100% allows "
            "as many retries as requests",
            "keep it low");
  check_one(lint(yaml("        retry:\n"
                      "          budget:\n"
                      "            min_per_second: 5000\n")),
            "t.yaml:9:13: listeners[0].routes[0].retry.budget.min_per_second: "
            "budget.min_per_second (5000/s) is so high",
            "does not limit retries");
  // The floor at or above the route's own rate limit (one bucket for the route).
  check_one(lint(yaml("        rate_limit: { rate: 50/s, key: route }\n"
                      "        retry:\n"
                      "          budget:\n"
                      "            min_per_second: 50\n")),
            "t.yaml:10:13: listeners[0].routes[0].retry.budget.min_per_second: "
            "budget.min_per_second (50/s) is not below the route's rate limit (50/s)",
            "every request be retried");
  CHECK(lint(yaml("        rate_limit: { rate: 50/s, key: client_ip }\n"
                  "        retry:\n"
                  "          budget: { min_per_second: 50 }\n"))
            .empty());
}

TEST_CASE("lint 2: attempts x per_try_timeout longer than the route timeout") {
  check_one(lint(yaml("        timeout: 1s\n"
                      "        retry:\n"
                      "          attempts: 3\n"
                      "          per_try_timeout: 500ms\n")),
            "t.yaml:10:11: listeners[0].routes[0].retry.per_try_timeout: attempts (3) x "
            "per_try_timeout (500ms) = 1500ms is longer than the route timeout (1s)",
            "before every attempt can run");
  // Exactly the route timeout, or no route timeout: no warning.
  CHECK(lint(yaml("        timeout: 1500ms\n"
                  "        retry: { attempts: 3, per_try_timeout: 500ms }\n"))
            .empty());
  CHECK(lint(yaml("        timeout: 0\n"
                  "        retry: { attempts: 3, per_try_timeout: 500ms }\n"))
            .empty());
}

TEST_CASE("lint 3: methods: all with retry on timeout") {
  check_one(lint(yaml("        retry:\n"
                      "          methods: all\n"
                      "          on: [timeout, reset]\n"
                      "          per_try_timeout: 2s\n")),
            "t.yaml:8:11: listeners[0].routes[0].retry.methods: methods: all with retry on "
            "timeout replays non-idempotent requests",
            "may execute twice");
  // Without per_try_timeout, `timeout` never triggers a retry; idempotent methods are safe.
  CHECK(lint(yaml("        retry: { methods: all, on: [timeout] }\n")).empty());
  CHECK(lint(yaml("        retry: { on: [timeout], per_try_timeout: 2s }\n")).empty());
}

TEST_CASE("lint 4: circuit breaker min_requests unreachable at the routes' rate limit") {
  check_one(lint(yaml("        rate_limit: { rate: 1/s, key: route }\n",
                      "    circuit_breaker:\n"
                      "      min_requests: 20\n")),
            "t.yaml:12:7: upstreams[0].circuit_breaker.min_requests: min_requests (20) is never "
            "reached within window (10s): the routes using this upstream ('api') are rate "
            "limited to 1/s in total, at most 10 requests per window",
            "lower min_requests or lengthen window");
  // min_requests left at its default: the warning points at the circuit_breaker key.
  check_one(lint(yaml("        rate_limit: { rate: 1/s, key: route }\n",
                      "    circuit_breaker: { window: 5s }\n")),
            "t.yaml:11:5: upstreams[0].circuit_breaker.min_requests: min_requests (20) is never "
            "reached within window (5s)",
            "at most 5 requests per window");
  // Per-client buckets, shadow mode, or another route without a limit: traffic is unbounded.
  CHECK(lint(yaml("        rate_limit: { rate: 1/s }\n", "    circuit_breaker: {}\n")).empty());
  CHECK(lint(yaml("        rate_limit: { rate: 1/s, key: route, enforce: false }\n",
                  "    circuit_breaker: {}\n"))
            .empty());
  CHECK(lint(yaml("        rate_limit: { rate: 1/s, key: route }\n"
                  "      - name: other\n"
                  "        match: { prefix: /other }\n"
                  "        upstream: app\n",
                  "    circuit_breaker: {}\n"))
            .empty());
  // Enough in total across the routes.
  CHECK(lint(yaml("        rate_limit: { rate: 1/s, key: route }\n"
                  "      - name: other\n"
                  "        match: { prefix: /other }\n"
                  "        upstream: app\n"
                  "        rate_limit: { rate: 1/s, key: route }\n",
                  "    circuit_breaker: {}\n"))
            .empty());
}

TEST_CASE("lint 5: rate-limit burst below one second of rate") {
  check_one(lint(yaml("        rate_limit:\n"
                      "          rate: 10/s\n"
                      "          burst: 5\n")),
            "t.yaml:9:11: listeners[0].routes[0].rate_limit.burst: burst (5) is less than one "
            "second of rate (10/s)",
            "set burst to at least 10");
  CHECK(lint(yaml("        rate_limit: { rate: 10/s, burst: 10 }\n")).empty());
  CHECK(lint(yaml("        rate_limit: { rate: 10/s }\n")).empty());  // default burst: 10
}

TEST_CASE("lint 6: health-check interval longer than the breaker's open_for") {
  check_one(lint(yaml("", "    circuit_breaker: { open_for: 30s }\n"
                          "    health_check:\n"
                          "      interval: 1m\n")),
            "t.yaml:12:7: upstreams[0].health_check.interval: interval (1m) is longer than "
            "circuit_breaker.open_for (30s)",
            "set interval below open_for");
  CHECK(lint(yaml("", "    health_check: { interval: 1m }\n")).empty());  // no breaker
}

TEST_CASE("lint 7: load-shedding queue timeout above a route timeout") {
  check_one(lint(yaml("        timeout: 1s\n", "    load_shedding:\n"
                                             "      queue: { timeout: 2s }\n")),
            "t.yaml:12:16: upstreams[0].load_shedding.queue.timeout: queue.timeout (2s) is "
            "longer than the timeout (1s) of route 'api' (listeners[0].routes[0])",
            "set queue.timeout below the route timeout");
  CHECK(lint(yaml("        timeout: 0\n", "    load_shedding: { queue: { timeout: 2s } }\n"))
            .empty());
  CHECK(lint(yaml("        timeout: 1s\n",
                  "    load_shedding: { enforce: false, queue: { timeout: 2s } }\n"))
            .empty());
}

TEST_CASE("lint: warnings come in file order, several per file") {
  auto w = lint(
      "upstreams:\n"
      "  - name: app\n"
      "    endpoints: [127.0.0.1:3000]\n"
      "    circuit_breaker: { open_for: 1s }\n"
      "    health_check: { interval: 2s }\n"
      "listeners:\n"
      "  - name: in\n"
      "    listen: 127.0.0.1:8080\n"
      "    routes:\n"
      "      - name: api\n"
      "        upstream: app\n"
      "        rate_limit: { rate: 10/s, burst: 2 }\n");
  REQUIRE_MESSAGE(w.size() == 2, joined(w));
  CHECK(w[0].rfind("t.yaml:5:21: upstreams[0].health_check.interval: ", 0) == 0);
  CHECK(w[1].rfind("t.yaml:12:35: listeners[0].routes[0].rate_limit.burst: ", 0) == 0);
}
