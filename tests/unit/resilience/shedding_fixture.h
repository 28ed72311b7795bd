// Helpers for the load-shedding unit tests (load_shedding_test.cc, shed_gate_test.cc): a
// fixed-limit config, a waiter that records its callbacks, and a private loop.
#pragma once

#include <doctest/doctest.h>
#include <uv.h>

#include <string>
#include <vector>

#include "resilience/load_shedder.h"
#include "resilience/shed_queue.h"

namespace bulwark::test {

inline LoadSheddingConfig fixed_limit(int limit, std::uint64_t queue_size = 10,
                               std::uint64_t timeout_ms = 50) {
  LoadSheddingConfig c;
  c.algorithm = "fixed";
  c.initial_limit = limit;
  c.min_limit = 1;
  c.max_limit = 1000;
  c.queue_size = queue_size;
  c.queue_timeout_ms = timeout_ms;
  return c;
}

// An adaptive (aimd) limit starting at `initial`, between 1 and `max`.
inline LoadSheddingConfig aimd_limit(int initial, int max) {
  LoadSheddingConfig c;
  c.algorithm = "aimd";
  c.initial_limit = initial;
  c.min_limit = 1;
  c.max_limit = max;
  return c;
}

struct Waiter final : ShedWaiter {
  std::string name;
  std::vector<std::string>* log = nullptr;
  int admitted = 0;
  int rejected = 0;
  std::string detail;
  explicit Waiter(std::string n, std::vector<std::string>* l = nullptr)
      : name(std::move(n)), log(l) {}
  void on_shed_admitted() override {
    ++admitted;
    if (log) log->push_back("+" + name);
  }
  void on_shed_rejected(const char* d) override {
    ++rejected;
    detail = d;
    if (log) log->push_back("-" + name);
  }
};

// A private loop for a gate; every handle closed at the end.
struct Loop {
  uv_loop_t loop{};
  Loop() { uv_loop_init(&loop); }
  ~Loop() {
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }
  void turn() { uv_run(&loop, UV_RUN_NOWAIT); }
};

}  // namespace bulwark::test
