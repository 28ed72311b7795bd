// gRPC over HTTP/2 as a proxy sees it: the deadline a client sends (grpc-timeout) and the
// status a reply Bulwark makes itself becomes for a gRPC client.
#pragma once

#include <cstdint>
#include <string_view>

#include "http/local_reply.h"

namespace bulwark {

// A gRPC client's deadline (grpc-timeout: 1 to 8 digits and a unit H, M, S, m, u or n) in
// milliseconds, rounded up; `valid` false (and 0) when it is malformed.
std::uint64_t grpc_timeout_ms(std::string_view value, bool& valid);

// The grpc-status of a local reply: 14 UNAVAILABLE (overload, breakers, upstream failures,
// injected faults), 8 RESOURCE_EXHAUSTED (rate limits, size limits), 4 DEADLINE_EXCEEDED
// (timeouts), 12 UNIMPLEMENTED (no route), 13 INTERNAL (a bad request).
int grpc_status_for(Reason reason);

// The content-type of a gRPC request ("application/grpc", optionally "+proto" or ";...").
bool is_grpc_content_type(std::string_view value);

}  // namespace bulwark
