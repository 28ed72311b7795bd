// A strict decoder of the chunked transfer coding (RFC 9112 7.1), the one grammar of it in
// Bulwark, used instead of llhttp's for request bodies and for upstream response bodies:
// Debian's llhttp 8.1 accepts any two bytes where the CRLF after chunk data belongs (and any
// byte after the CR that ends a chunk-size line or the trailer section), which lets a body
// hide a second message, and it refuses valid chunk extensions such as `5;a=b;c=d`. Here
// every line of the coding ends in exactly CRLF, extensions follow the RFC grammar
//   chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )
// and are ignored, and trailer fields are handed out one complete, validated line at a time.
// Anything else is an error that names what was wrong.
//
// Pull interface: next() consumes input and returns one event at a time, so the caller can
// stop (or be destroyed) between events without re-entrancy. Data events point into the
// caller's input; nothing is copied except a trailer line, which is kept until it is
// complete (bounded by Limits::max_trailer_bytes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bulwark {

class ChunkedDecoder {
 public:
  struct Limits {
    std::size_t max_line = 4096;            // one chunk-size line, extensions included
    std::size_t max_trailer_bytes = 65536;  // the whole trailer section
    std::size_t max_trailers = 100;         // trailer field lines
  };

  enum class Event {
    need_more,    // every byte given was consumed; call again with more input
    chunk_start,  // a chunk of chunk_size() > 0 bytes begins
    data,         // data() is the next piece of chunk data (a view into the input)
    chunk_end,    // the chunk's data and its CRLF are complete
    trailer,      // trailer_name()/trailer_value() hold one trailer field
    done,         // the last chunk, its trailers and the final CRLF are complete
    error,        // error() says why; the decoder stays in error
  };

  // Which limit an error broke, so that the caller can answer 431 instead of 400, or name
  // its own limit.
  enum class ErrorKind { syntax, line_too_long, trailers_too_large };

  ChunkedDecoder() = default;
  explicit ChunkedDecoder(const Limits& limits) : limits_(limits) {}

  // Starts a new body.
  void reset(const Limits& limits);
  void reset() { reset(limits_); }

  // Decodes from `p` (advanced past what was consumed) up to `end` and returns the next event.
  // After `done`, `p` points just past the body: the bytes from there belong to what follows.
  Event next(const char*& p, const char* end);

  std::uint64_t chunk_size() const { return size_; }
  std::string_view data() const { return data_; }
  std::string_view trailer_name() const { return trailer_name_; }
  std::string_view trailer_value() const { return trailer_value_; }
  const char* error() const { return error_; }
  ErrorKind error_kind() const { return error_kind_; }
  bool finished() const { return state_ == State::done; }
  // Bytes of the coding consumed so far (chunk lines, data, CRLFs and trailers).
  std::uint64_t consumed() const { return consumed_; }

 private:
  enum class State {
    size_first,    // the first hex digit of a chunk size
    size,          // more hex digits, or what follows them
    ext_bws,       // whitespace after the size or an extension: ';' must follow
    ext_name_bws,  // after ';': optional whitespace, then the extension name
    ext_name,
    ext_name_end,  // after a name: whitespace, then '=' or ';' (or CR when no whitespace)
    ext_value_bws,
    ext_value_token,
    ext_value_quoted,
    ext_value_escape,
    ext_after_value,  // after a value: whitespace then ';', or CR
    size_lf,          // the LF of the chunk-size line
    data,
    data_cr,
    data_lf,
    trailer_start,  // a trailer line or the final CRLF
    trailer_line,   // collecting a trailer line
    trailer_lf,     // the LF ending a trailer line
    final_lf,       // the LF of the final CRLF
    done,
    error,
  };

  Event fail(const char* why, ErrorKind kind = ErrorKind::syntax);
  Event finish_trailer();

  Limits limits_;
  State state_ = State::size_first;
  std::uint64_t size_ = 0;
  std::uint64_t remaining_ = 0;
  std::size_t line_length_ = 0;  // of the current chunk-size line
  std::string line_;             // the trailer line being collected
  std::size_t trailer_bytes_ = 0;
  std::size_t trailers_ = 0;
  std::string_view data_;
  std::string_view trailer_name_;
  std::string_view trailer_value_;
  const char* error_ = "";
  ErrorKind error_kind_ = ErrorKind::syntax;
  std::uint64_t consumed_ = 0;
};

}  // namespace bulwark
