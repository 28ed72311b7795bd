#include "upstream/balancer.h"

#include <doctest/doctest.h>

#include <vector>

using namespace bulwark;

TEST_CASE("round robin cycles through every endpoint in order") {
  Balancer b(Balancer::Kind::round_robin, 1);
  std::vector<std::int64_t> in_flight(3, 0);
  std::vector<std::size_t> picks;
  for (int i = 0; i < 6; ++i) picks.push_back(b.pick(in_flight));
  CHECK(picks == std::vector<std::size_t>{0, 1, 2, 0, 1, 2});
}

TEST_CASE("random spreads evenly with a fixed seed") {
  Balancer b(Balancer::Kind::random, 7);
  std::vector<std::int64_t> in_flight(4, 0);
  std::vector<int> counts(4, 0);
  for (int i = 0; i < 40000; ++i) ++counts[b.pick(in_flight)];
  for (int c : counts) CHECK(c == doctest::Approx(10000).epsilon(0.05));
}

TEST_CASE("least_request prefers the less loaded of two choices") {
  Balancer b(Balancer::Kind::least_request, 3);
  std::vector<std::int64_t> in_flight = {50, 0, 50};
  std::vector<int> counts(3, 0);
  for (int i = 0; i < 30000; ++i) ++counts[b.pick(in_flight)];
  // Endpoint 1 wins whenever it is one of the two candidates: 2/3 of the picks.
  CHECK(counts[1] == doctest::Approx(20000).epsilon(0.05));
  CHECK(b.pick(std::vector<std::int64_t>{5}) == 0);
}
