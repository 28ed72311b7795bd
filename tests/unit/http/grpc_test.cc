// gRPC helpers (http/grpc.h): grpc-timeout parsing and the status of local replies.
#include "http/grpc.h"

#include <doctest/doctest.h>

using namespace bulwark;

TEST_CASE("grpc-timeout: every unit, rounded up to milliseconds") {
  bool valid = false;
  CHECK(grpc_timeout_ms("1H", valid) == 3'600'000);
  CHECK(valid);
  CHECK(grpc_timeout_ms("2M", valid) == 120'000);
  CHECK(grpc_timeout_ms("3S", valid) == 3000);
  CHECK(grpc_timeout_ms("300m", valid) == 300);
  CHECK(grpc_timeout_ms("1500u", valid) == 2);
  CHECK(grpc_timeout_ms("1u", valid) == 1);
  CHECK(grpc_timeout_ms("1n", valid) == 1);
  CHECK(grpc_timeout_ms("0m", valid) == 0);
  CHECK(valid);  // zero is a deadline that has passed, not an absent one
  CHECK(grpc_timeout_ms("99999999S", valid) == 99'999'999'000ULL);
  CHECK(valid);
}

TEST_CASE("grpc-timeout: malformed values are not deadlines") {
  bool valid = true;
  for (const char* v : {"", "m", "10", "10s", "10x", "-1m", "1.5S", "123456789S", " 1S", "1S "}) {
    CAPTURE(v);
    CHECK(grpc_timeout_ms(v, valid) == 0);
    CHECK_FALSE(valid);
  }
}

TEST_CASE("gRPC status of local replies") {
  CHECK(grpc_status_for(Reason::rate_limited) == 8);
  CHECK(grpc_status_for(Reason::body_too_large) == 8);
  CHECK(grpc_status_for(Reason::header_too_large) == 8);
  CHECK(grpc_status_for(Reason::upstream_timeout) == 4);
  CHECK(grpc_status_for(Reason::request_timeout) == 4);
  CHECK(grpc_status_for(Reason::no_route) == 12);
  CHECK(grpc_status_for(Reason::bad_request) == 13);
  for (Reason r : {Reason::overloaded, Reason::circuit_open, Reason::no_healthy_upstream,
                   Reason::pending_overflow, Reason::upstream_connect_failure,
                   Reason::upstream_reset, Reason::upstream_protocol_error,
                   Reason::fault_injected})
    CHECK(grpc_status_for(r) == 14);
}

TEST_CASE("gRPC content types") {
  CHECK(is_grpc_content_type("application/grpc"));
  CHECK(is_grpc_content_type("application/grpc+proto"));
  CHECK(is_grpc_content_type("application/grpc;charset=utf-8"));
  CHECK_FALSE(is_grpc_content_type("application/grpc-web"));
  CHECK_FALSE(is_grpc_content_type("application/json"));
  CHECK_FALSE(is_grpc_content_type("application/grp"));
}

TEST_CASE("grpc-status values and their HTTP equivalents") {
  CHECK(parse_grpc_status("0") == 0);
  CHECK(parse_grpc_status("14") == 14);
  CHECK(parse_grpc_status("") == -1);
  CHECK(parse_grpc_status("1a") == -1);
  CHECK(parse_grpc_status(" 1") == -1);
  CHECK(parse_grpc_status("123456") == -1);
  CHECK(grpc_http_status(0) == 200);
  CHECK(grpc_http_status(14) == 503);  // UNAVAILABLE: a breaker's failure, an overload sign
  CHECK(grpc_http_status(4) == 504);   // DEADLINE_EXCEEDED
  CHECK(grpc_http_status(8) == 429);   // RESOURCE_EXHAUSTED
  CHECK(grpc_http_status(13) == 500);  // INTERNAL
  CHECK(grpc_http_status(2) == 500);   // UNKNOWN
  CHECK(grpc_http_status(3) == 400);   // INVALID_ARGUMENT: the client's, not a failure
  CHECK(grpc_http_status(5) == 404);
  CHECK(grpc_http_status(12) == 501);
  CHECK(grpc_http_status(99) == 500);
}

TEST_CASE("gRPC statuses a retry policy may name") {
  CHECK(grpc_retry_index("unavailable") >= 0);
  CHECK(kGrpcRetryCodes[grpc_retry_index("unavailable")] == 14);
  CHECK(kGrpcRetryCodes[grpc_retry_index("resource-exhausted")] == 8);
  CHECK(kGrpcRetryCodes[grpc_retry_index("deadline-exceeded")] == 4);
  CHECK(kGrpcRetryCodes[grpc_retry_index("cancelled")] == 1);
  CHECK(kGrpcRetryCodes[grpc_retry_index("internal")] == 13);
  CHECK(grpc_retry_index("UNAVAILABLE") == -1);
  CHECK(grpc_retry_index("5xx") == -1);
  for (int i = 0; i < kGrpcRetryNames; ++i) {
    CHECK(grpc_retry_index_of_status(kGrpcRetryCodes[i]) == i);
    CHECK(grpc_retry_index(grpc_retry_name(i)) == i);
  }
  CHECK(grpc_retry_index_of_status(2) == -1);
  CHECK(grpc_retry_name(5) == nullptr);
}
