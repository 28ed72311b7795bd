// The plain response head in one pass. Almost every upstream response head is of one simple
// kind: HTTP/1.0 or 1.1, a final status, CRLF line ends, well-formed fields, its body framed by
// Content-Length or chunked. parse_plain_response_head reads such a head straight into a
// HeaderBlock, without the general parser (llhttp) and the byte-by-byte head scanner, which
// read everything else. It only accepts what llhttp accepts with the same meaning (a unit
// test compares the two over many heads), and declines the rest, deciding nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "http/headers.h"

namespace bulwark {

struct PlainResponseHead {
  int status = 0;
  int minor_version = 1;
  bool has_content_length = false;
  std::uint64_t content_length = 0;
  bool chunked = false;
  // What the version and Connection say (RFC 9112 9.3); the framing always allows it here.
  bool keep_alive = false;
};

// Reads the head at the start of data[0, len) if it is complete within `limit` bytes and is a
// plain one:
//   - "HTTP/1.0" or "HTTP/1.1", a status of 200-599 (1xx and 101 go to the general parser);
//   - CRLF line ends, field names that are tokens directly followed by ':', field values of
//     VCHAR, obs-text, SP and HTAB only;
//   - at most one Content-Length, of digits; Transfer-Encoding only as a single "chunked" in
//     HTTP/1.1 without Content-Length; Connection only as a single "keep-alive" or "close";
//     no Upgrade or Proxy-Connection field;
//   - a body framed by Content-Length or chunked, unless none follows (a response to HEAD,
//     `head_request`, or a 204 or 304).
// Returns the head's length, with `headers`, `reason` and `out` filled; 0 otherwise (then they
// hold nothing meaningful and the general parser reads the head).
std::size_t parse_plain_response_head(const char* data, std::size_t len, std::size_t limit,
                                      bool head_request, HeaderBlock& headers,
                                      std::string& reason, PlainResponseHead& out);

}  // namespace bulwark
