// Strict chunked framing (RFC 9112 7.1) of an upstream response body, checked on the raw
// bytes before llhttp reads them. Debian's llhttp 8.1 takes any two bytes in place of the
// CRLF after chunk data and any byte after the CR that ends a chunk-size line or the last
// chunk: a malformed body would be relayed as a complete, shorter one. ChunkedBodyChecker
// accepts exactly
//   chunked-body = *chunk last-chunk trailer-section CRLF
//   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//   chunk-ext    = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )
// and bounds each chunk-size line and the trailer section by a byte limit.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bulwark {

class ChunkedBodyChecker {
 public:
  enum class Result { more, done, error };

  // A new chunked body; `limit` bounds a chunk-size line and the trailer section.
  void start(std::uint64_t limit);

  // Scans body bytes. `consumed` is set to the bytes that belong to the body: all of them
  // (more), up to and including the final LF (done), or up to the offending byte (error;
  // error() says what is wrong).
  Result scan(const char* data, std::size_t len, std::size_t& consumed);
  const char* error() const { return error_; }

 private:
  enum class State {
    size_start,      // first hex digit of a chunk size
    size,            // more hex digits
    ext_bws,         // whitespace before ";" or the line end
    ext_name_start,  // whitespace, then an extension name
    ext_name,
    ext_after_name,  // whitespace, then "=", ";" or the line end
    ext_value_start,
    ext_token_value,
    ext_quoted_value,
    ext_quoted_pair,  // after a backslash in a quoted value
    size_lf,          // CR seen at the end of the chunk-size line
    data,
    data_cr,
    data_lf,
    trailer_line_start,
    trailer_line,
    trailer_lf,
    final_lf,
    done
  };

  Result fail(const char* why) {
    error_ = why;
    return Result::error;
  }

  State state_ = State::size_start;
  std::uint64_t size_ = 0;
  std::uint64_t line_bytes_ = 0;     // of the current chunk-size line
  std::uint64_t trailer_bytes_ = 0;  // of the trailer section
  std::uint64_t limit_ = 0;
  const char* error_ = "";
};

}  // namespace bulwark
