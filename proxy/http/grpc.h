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

// A grpc-status value (decimal, 0 to 16 and beyond), or -1 when it is not a number.
int parse_grpc_status(std::string_view value);

// The HTTP status a gRPC status stands for (google.rpc.Code's mapping: UNAVAILABLE 503,
// DEADLINE_EXCEEDED 504, RESOURCE_EXHAUSTED 429, INTERNAL and UNKNOWN 500, ...), so that
// breakers, outcomes and load shedding judge a gRPC failure as its HTTP equivalent.
int grpc_http_status(int grpc_status);

// The gRPC statuses a retry policy may name in `on:` (cancelled, deadline-exceeded,
// resource-exhausted, internal, unavailable), in this order: the index of a name (-1 when it
// is not one), the status of an index, the name of a status (nullptr when it has none).
inline constexpr int kGrpcRetryCodes[] = {1, 4, 8, 13, 14};
inline constexpr int kGrpcRetryNames = 5;
int grpc_retry_index(std::string_view name);
int grpc_retry_index_of_status(int grpc_status);
const char* grpc_retry_name(int index);

}  // namespace bulwark
