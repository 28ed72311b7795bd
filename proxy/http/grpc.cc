#include "http/grpc.h"

namespace bulwark {

std::uint64_t grpc_timeout_ms(std::string_view v, bool& valid) {
  valid = false;
  if (v.size() < 2 || v.size() > 9) return 0;
  std::uint64_t n = 0;
  for (char c : v.substr(0, v.size() - 1)) {
    if (c < '0' || c > '9') return 0;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  std::uint64_t ms;
  switch (v.back()) {
    case 'H': ms = n * 3'600'000; break;
    case 'M': ms = n * 60'000; break;
    case 'S': ms = n * 1000; break;
    case 'm': ms = n; break;
    case 'u': ms = (n + 999) / 1000; break;
    case 'n': ms = (n + 999'999) / 1'000'000; break;
    default: return 0;
  }
  valid = true;
  return ms;
}

int grpc_status_for(Reason r) {
  switch (r) {
    case Reason::rate_limited:
    case Reason::body_too_large:
    case Reason::header_too_large:
      return 8;  // RESOURCE_EXHAUSTED
    case Reason::upstream_timeout:
    case Reason::request_timeout:
      return 4;  // DEADLINE_EXCEEDED
    case Reason::no_route:
      return 12;  // UNIMPLEMENTED
    case Reason::bad_request:
      return 13;  // INTERNAL
    default:
      return 14;  // UNAVAILABLE
  }
}

bool is_grpc_content_type(std::string_view v) {
  constexpr std::string_view kGrpc = "application/grpc";
  if (v.substr(0, kGrpc.size()) != kGrpc) return false;
  return v.size() == kGrpc.size() || v[kGrpc.size()] == '+' || v[kGrpc.size()] == ';';
}

}  // namespace bulwark
