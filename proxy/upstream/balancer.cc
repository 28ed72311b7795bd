#include "upstream/balancer.h"

namespace bulwark {

Balancer::Kind Balancer::parse(std::string_view name) {
  if (name == "round_robin") return Kind::round_robin;
  if (name == "random") return Kind::random;
  return Kind::least_request;
}

std::uint64_t Balancer::next() {
  // xorshift64*: fast, good enough for choosing endpoints, reproducible from the seed.
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  return state_ * 0x2545f4914f6cdd1dull;
}

std::size_t Balancer::pick(std::span<const std::int64_t> in_flight) {
  const std::size_t n = in_flight.size();
  if (n <= 1) return 0;
  switch (kind_) {
    case Kind::round_robin:
      return cursor_++ % n;
    case Kind::random:
      return next() % n;
    case Kind::least_request: {
      std::size_t a = next() % n;
      std::size_t b = next() % (n - 1);
      if (b >= a) ++b;  // two distinct candidates
      return in_flight[b] < in_flight[a] ? b : a;
    }
  }
  return 0;
}

}  // namespace bulwark
