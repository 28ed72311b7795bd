// Test helpers for an upstream's per-worker views (Upstream) on a private loop: the bulkhead,
// balancing and what a request holds on them.
#pragma once

#include <doctest/doctest.h>
#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "net/address.h"
#include "upstream/upstream.h"

namespace bulwark::test {

// A bulkhead waiter that counts its callbacks.
struct FakeRequest final : PendingRequest {
  int admitted = 0;
  int timed_out = 0;
  void on_admitted() override { ++admitted; }
  void on_pending_timeout() override { ++timed_out; }
};

// One UpstreamState with `workers` views on one loop; closes every handle at the end and
// checks that none is left open.
struct UpstreamFixture {
  explicit UpstreamFixture(UpstreamConfig c, int worker_count = 2)
      : config(std::move(c)), workers(worker_count) {
    uv_loop_init(&loop);
    state = std::make_unique<UpstreamState>(config, workers);
    for (int w = 0; w < workers; ++w)
      views.push_back(std::make_unique<Upstream>(&loop, *state, w, 7 + static_cast<unsigned>(w)));
  }
  ~UpstreamFixture() {
    for (auto& v : views) v->close_all();
    uv_run(&loop, UV_RUN_DEFAULT);
    views.clear();
    CHECK(uv_loop_close(&loop) == 0);
  }
  UpstreamFixture(const UpstreamFixture&) = delete;
  UpstreamFixture& operator=(const UpstreamFixture&) = delete;

  // Endpoints 127.0.0.1:20000 .. 20000+n-1 (never connected to).
  void set_endpoints(int n) {
    std::vector<Address> addresses;
    for (int i = 0; i < n; ++i) {
      Address a;
      std::string error;
      REQUIRE(parse_ip_address("127.0.0.1:" + std::to_string(20000 + i), a, error));
      addresses.push_back(a);
    }
    state->set_endpoints(merge_endpoints(*state->endpoints(), addresses, config, workers));
    for (auto& v : views) v->refresh_endpoints();
  }
  EndpointState& endpoint(int i) { return *(*state->endpoints())[static_cast<std::size_t>(i)]; }

  UpstreamConfig config;
  int workers;
  uv_loop_t loop{};
  std::unique_ptr<UpstreamState> state;
  std::vector<std::unique_ptr<Upstream>> views;
};

}  // namespace bulwark::test
