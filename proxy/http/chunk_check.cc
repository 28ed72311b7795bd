#include "http/chunk_check.h"

#include "http/headers.h"

namespace bulwark {

namespace {

int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_ws(unsigned char c) { return c == ' ' || c == '\t'; }
// qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
bool is_qdtext(unsigned char c) {
  return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
         (c >= 0x5d && c <= 0x7e) || c >= 0x80;
}
// quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
bool is_quoted_pair_char(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

constexpr const char* kBadSize = "invalid chunk size line";
constexpr const char* kBadExtension = "invalid chunk extension";

}  // namespace

void ChunkedBodyChecker::start(std::uint64_t limit) {
  state_ = State::size_start;
  size_ = 0;
  line_bytes_ = 0;
  trailer_bytes_ = 0;
  limit_ = limit;
  error_ = "";
}

ChunkedBodyChecker::Result ChunkedBodyChecker::scan(const char* data, std::size_t len,
                                                    std::size_t& consumed) {
  std::size_t i = 0;
  Result result = Result::more;
  while (i < len && result == Result::more) {
    consumed = i;
    auto c = static_cast<unsigned char>(data[i]);
    if (state_ == State::data) {
      // Chunk data is skipped in one step; only its end is checked.
      std::uint64_t n = len - i < size_ ? len - i : size_;
      size_ -= n;
      i += static_cast<std::size_t>(n);
      if (size_ == 0) state_ = State::data_cr;
      continue;
    }
    if (state_ < State::size_lf && ++line_bytes_ > limit_)
      return fail("a chunk-size line exceeds the upstream's max_response_header_bytes");
    if (state_ >= State::trailer_line_start && state_ <= State::final_lf &&
        ++trailer_bytes_ > limit_)
      return fail("the trailer section exceeds the upstream's max_response_header_bytes");
    switch (state_) {
      case State::size_start:
      case State::size: {
        int v = hex_value(c);
        if (v >= 0) {
          if (size_ > (UINT64_MAX >> 4)) return fail("chunk size overflow");
          size_ = (size_ << 4) | static_cast<std::uint64_t>(v);
          state_ = State::size;
        } else if (state_ == State::size_start) {
          return fail(kBadSize);
        } else if (c == '\r') {
          state_ = State::size_lf;
        } else if (c == ';') {
          state_ = State::ext_name_start;
        } else if (is_ws(c)) {
          state_ = State::ext_bws;
        } else {
          return fail(kBadSize);
        }
        break;
      }
      case State::ext_bws:
        if (c == ';')
          state_ = State::ext_name_start;
        else if (c == '\r')
          state_ = State::size_lf;
        else if (!is_ws(c))
          return fail(kBadExtension);
        break;
      case State::ext_name_start:
        if (is_tchar(c))
          state_ = State::ext_name;
        else if (!is_ws(c))
          return fail(kBadExtension);
        break;
      case State::ext_name:
      case State::ext_after_name:
        if (state_ == State::ext_name && is_tchar(c)) break;
        if (c == '=')
          state_ = State::ext_value_start;
        else if (c == ';')
          state_ = State::ext_name_start;
        else if (c == '\r')
          state_ = State::size_lf;
        else if (is_ws(c))
          state_ = State::ext_after_name;
        else
          return fail(kBadExtension);
        break;
      case State::ext_value_start:
        if (c == '"')
          state_ = State::ext_quoted_value;
        else if (is_tchar(c))
          state_ = State::ext_token_value;
        else if (!is_ws(c))
          return fail(kBadExtension);
        break;
      case State::ext_token_value:
        if (is_tchar(c)) break;
        if (c == ';')
          state_ = State::ext_name_start;
        else if (c == '\r')
          state_ = State::size_lf;
        else if (is_ws(c))
          state_ = State::ext_bws;
        else
          return fail(kBadExtension);
        break;
      case State::ext_quoted_value:
        if (c == '"')
          state_ = State::ext_bws;
        else if (c == '\\')
          state_ = State::ext_quoted_pair;
        else if (!is_qdtext(c))
          return fail(kBadExtension);
        break;
      case State::ext_quoted_pair:
        if (!is_quoted_pair_char(c)) return fail(kBadExtension);
        state_ = State::ext_quoted_value;
        break;
      case State::size_lf:
        if (c != '\n') return fail("a chunk-size line is not ended by CRLF");
        line_bytes_ = 0;
        state_ = size_ == 0 ? State::trailer_line_start : State::data;
        break;
      case State::data:
        break;  // handled above
      case State::data_cr:
      case State::data_lf:
        if (c != (state_ == State::data_cr ? '\r' : '\n'))
          return fail("chunk data is not followed by CRLF");
        state_ = state_ == State::data_cr ? State::data_lf : State::size_start;
        break;
      case State::trailer_line_start:
        if (c == '\r')
          state_ = State::final_lf;
        else if (c == '\n')
          return fail("a line of the trailer section is not ended by CRLF");
        else
          state_ = State::trailer_line;
        break;
      case State::trailer_line:
        if (c == '\r')
          state_ = State::trailer_lf;
        else if (c == '\n')
          return fail("a line of the trailer section is not ended by CRLF");
        break;
      case State::trailer_lf:
        if (c != '\n') return fail("a line of the trailer section is not ended by CRLF");
        state_ = State::trailer_line_start;
        break;
      case State::final_lf:
        if (c != '\n') return fail("the last chunk is not ended by CRLF");
        state_ = State::done;
        result = Result::done;
        break;
      case State::done:
        result = Result::done;
        continue;  // bytes after the body are not part of it
    }
    ++i;
  }
  consumed = i;
  return result;
}

}  // namespace bulwark
