// Responses Bulwark makes itself. Each carries x-bulwark-reason and an RFC 9457
// application/problem+json body; the reason names and statuses are the public contract
// in docs/reference.md.
#pragma once

#include <string>
#include <string_view>

namespace bulwark {

enum class Reason : int {
  rate_limited,
  overloaded,
  circuit_open,
  no_healthy_upstream,
  pending_overflow,
  upstream_connect_failure,
  upstream_reset,
  upstream_protocol_error,
  upstream_timeout,
  no_route,
  bad_request,
  request_timeout,
  body_too_large,
  header_too_large,
  fault_injected,
  count_
};

constexpr int kReasonCount = static_cast<int>(Reason::count_);

std::string_view reason_name(Reason r);   // "rate-limited"
int reason_status(Reason r);              // 429 (fault-injected: 503 unless configured)
std::string_view reason_title(Reason r);  // "Rate limited"

struct LocalReply {
  Reason reason = Reason::bad_request;
  int status = 0;               // 0: the reason's status
  std::string_view detail;      // human-readable detail for the problem body
  std::string_view extra;       // pre-formatted extra header lines ("Name: v\r\n")
  std::string_view request_id;  // echoed as X-Request-Id when known
  int minor_version = 1;
  bool close = false;         // add Connection: close
  bool head_request = false;  // HEAD: headers only
};

// The problem+json body alone into `body` (cleared first); returns the status.
int local_reply_body(std::string& body, const LocalReply& reply);
// Serializes the whole response into `out` (cleared first); returns the status.
int write_local_reply(std::string& out, const LocalReply& reply);

}  // namespace bulwark
