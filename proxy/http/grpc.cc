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

namespace {
constexpr const char* kRetryNames[kGrpcRetryNames] = {"cancelled", "deadline-exceeded",
                                                     "resource-exhausted", "internal",
                                                     "unavailable"};
}  // namespace

int parse_grpc_status(std::string_view v) {
  if (v.empty() || v.size() > 4) return -1;
  int n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return -1;
    n = n * 10 + (c - '0');
  }
  return n;
}

int grpc_http_status(int code) {
  switch (code) {
    case 0: return 200;    // OK
    case 1: return 499;    // CANCELLED
    case 3: return 400;    // INVALID_ARGUMENT
    case 4: return 504;    // DEADLINE_EXCEEDED
    case 5: return 404;    // NOT_FOUND
    case 6: return 409;    // ALREADY_EXISTS
    case 7: return 403;    // PERMISSION_DENIED
    case 8: return 429;    // RESOURCE_EXHAUSTED
    case 9: return 400;    // FAILED_PRECONDITION
    case 10: return 409;   // ABORTED
    case 11: return 400;   // OUT_OF_RANGE
    case 12: return 501;   // UNIMPLEMENTED
    case 14: return 503;   // UNAVAILABLE
    case 16: return 401;   // UNAUTHENTICATED
    default: return 500;   // UNKNOWN, INTERNAL, DATA_LOSS, and codes not defined
  }
}

int grpc_retry_index(std::string_view name) {
  for (int i = 0; i < kGrpcRetryNames; ++i)
    if (name == kRetryNames[i]) return i;
  return -1;
}

int grpc_retry_index_of_status(int code) {
  for (int i = 0; i < kGrpcRetryNames; ++i)
    if (kGrpcRetryCodes[i] == code) return i;
  return -1;
}

const char* grpc_retry_name(int index) {
  return index >= 0 && index < kGrpcRetryNames ? kRetryNames[index] : nullptr;
}

}  // namespace bulwark
