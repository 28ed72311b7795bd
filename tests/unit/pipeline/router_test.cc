#include "pipeline/router.h"

#include <doctest/doctest.h>

#include <cstring>

#include "config/loader.h"
#include "test_helpers.h"

using namespace bulwark;
using test::header_block;

namespace {

Config routes_config() {
  const char* text = R"(listeners:
  - name: inbound
    listen: 127.0.0.1:8080
    routes:
      - name: canary
        match: { prefix: /api, headers: { x-canary: "1" } }
        upstream: app
      - name: writes
        match: { prefix: /api, methods: [POST, PUT] }
        upstream: app
      - name: tenant
        match: { prefix: /api, host: "*.example.com" }
        upstream: app
      - name: exact-host
        match: { host: "Admin.Example.org" }
        upstream: app
      - name: api
        match: { prefix: /api }
        upstream: app
upstreams:
  - name: app
    endpoints: [127.0.0.1:3000]
)";
  LoadResult r = load_config_string(text, "routes.yaml");
  REQUIRE(r.config);
  return *r.config;
}
}  // namespace

TEST_CASE("first matching route wins") {
  Config c = routes_config();
  Router router(c.listeners[0]);
  auto none = header_block({});
  auto canary = header_block({{"X-Canary", "1"}});
  auto not_canary = header_block({{"X-Canary", "2"}});
  CHECK(router.match("POST", "/api/x", "a.example.com", canary) == 0);
  CHECK(router.match("POST", "/api/x", "a.example.com", not_canary) == 1);
  CHECK(router.match("GET", "/api/x", "a.example.com:8080", none) == 2);
  CHECK(router.match("GET", "/api/x", "example.com", none) == 4);
  CHECK(router.match("GET", "/other", "admin.example.org", none) == 3);
  CHECK(router.match("GET", "/other", "admin.example.org:80", none) == 3);
  CHECK(router.match("GET", "/other", "x.example.com", none) == -1);
  CHECK(router.match("GET", "/ap", "x", none) == -1);
}

TEST_CASE("host patterns") {
  CHECK(host_matches("", "anything"));
  CHECK(host_matches("*.example.com", "a.example.com"));
  CHECK(host_matches("*.example.com", "a.b.EXAMPLE.com:443"));
  CHECK_FALSE(host_matches("*.example.com", "example.com"));
  CHECK_FALSE(host_matches("*.example.com", "badexample.com"));
  CHECK(host_matches("example.com", "EXAMPLE.COM"));
  CHECK_FALSE(host_matches("example.com", "www.example.com"));
}
