// Endpoint choice for one upstream: round_robin, random, or least_request (power of two
// random choices over in-flight counts, which avoids the herd effect of a global minimum).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace bulwark {

class Balancer {
 public:
  enum class Kind { round_robin, least_request, random };
  static Kind parse(std::string_view name);

  Balancer(Kind kind, std::uint64_t seed) : kind_(kind), state_(seed | 1) {}
  // Index of the chosen endpoint; `in_flight` has one count per endpoint (non-empty).
  std::size_t pick(std::span<const std::int64_t> in_flight);

 private:
  std::uint64_t next();
  Kind kind_;
  std::uint64_t state_;
  std::size_t cursor_ = 0;
};

}  // namespace bulwark
