// Strict framing of an upstream response head, checked on the raw bytes before llhttp reads
// them. Debian's llhttp 8.1 is built non-strict: it takes any byte after the CR that ends the
// status line or the head, status codes such as 20 or 600, and control bytes in the reason
// phrase. ResponseHeadScanner finds where each head ends, refuses those forms, and bounds the
// bytes of the head (interim 1xx heads included), so a head never grows past the limit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace bulwark {

class ResponseHeadScanner {
 public:
  enum class Result { more, done, error };

  // A new response: `limit` bytes for its head and the 1xx heads before it.
  void start(std::uint64_t limit);
  // The head of the same response after a 1xx one: the byte budget goes on.
  void next_head();

  // Scans head bytes. `consumed` is set to the bytes that belong to the head: all of them
  // (more), up to and including the line feed of the empty line that ends it (done: then
  // nothing more until next_head()), or up to the offending byte (error; error() says what
  // is wrong).
  Result scan(const char* data, std::size_t len, std::size_t& consumed);

  // The last scan() saw a line ended by a lone LF (RFC 9112 2.2 lets a recipient accept it).
  bool saw_bare_lf() const { return bare_lf_; }
  // The last byte scanned was a CR (its LF is in the next read).
  bool pending_cr() const { return state_ == State::cr; }
  const char* error() const { return error_; }
  // Nothing of this response's heads was scanned yet.
  bool at_start() const { return state_ == State::version && column_ == 0 && bytes_ == 0; }
  std::uint64_t bytes() const { return bytes_; }
  int status() const { return status_; }

  // Copies `len` head bytes into `out` with a CR inserted before each lone LF. `cr_before`:
  // the byte before `data` was a CR.
  static void add_crs(const char* data, std::size_t len, bool cr_before, std::string& out);

 private:
  enum class State {
    version,     // "HTTP/1.x"
    code,        // SP and three digits
    after_code,  // SP, or the end of the line
    reason,      // reason phrase
    line_start,  // first byte of a field line, or of the empty line
    field_line,  // rest of a field line
    cr,          // after a CR: only LF may follow
    done         // the head ended: nothing more belongs to it
  };

  // The common case in one pass: a whole head with CRLF line ends at the start of `data`.
  // Returns its length, or 0 when the byte-by-byte path must decide (anything unusual,
  // including an incomplete head).
  std::size_t scan_whole_head(const char* data, std::size_t len);

  State state_ = State::version;
  bool line_empty_ = false;  // the line being ended by CR has no bytes
  bool bare_lf_ = false;
  int column_ = 0;
  int status_ = 0;
  std::uint64_t bytes_ = 0;
  std::uint64_t limit_ = 0;
  const char* error_ = "";
};

}  // namespace bulwark
