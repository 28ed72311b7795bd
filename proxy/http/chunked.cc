#include "http/chunked.h"

#include <limits>

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

// qdtext of a quoted-string (RFC 9110 5.6.4), the quote and backslash excluded.
bool is_qdtext(unsigned char c) {
  return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
         (c >= 0x5d && c <= 0x7e) || c >= 0x80;
}

// What may follow a backslash in a quoted-string: the field-value bytes (RFC 9110 5.6.4).
bool is_quoted_pair_char(unsigned char c) { return is_field_value_char(c); }

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ws(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && is_ws(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

void ChunkedDecoder::reset(const Limits& limits) {
  limits_ = limits;
  state_ = State::size_first;
  size_ = 0;
  remaining_ = 0;
  line_length_ = 0;
  line_.clear();
  trailer_bytes_ = 0;
  trailers_ = 0;
  data_ = {};
  trailer_name_ = {};
  trailer_value_ = {};
  error_ = "";
  error_kind_ = ErrorKind::syntax;
  consumed_ = 0;
}

ChunkedDecoder::Event ChunkedDecoder::fail(const char* why, ErrorKind kind) {
  state_ = State::error;
  error_ = why;
  error_kind_ = kind;
  return Event::error;
}

ChunkedDecoder::Event ChunkedDecoder::finish_trailer() {
  if (++trailers_ > limits_.max_trailers)
    return fail("too many trailer fields", ErrorKind::trailers_too_large);
  std::string_view line = line_;
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return fail("a trailer line without a colon");
  std::string_view name = line.substr(0, colon);
  if (!is_token(name)) return fail("invalid trailer field name");
  std::string_view value = trim_ows(line.substr(colon + 1));
  for (unsigned char c : value)
    if (!is_field_value_char(c)) return fail("invalid character in a trailer field value");
  trailer_name_ = name;
  trailer_value_ = value;
  state_ = State::trailer_start;
  return Event::trailer;
}

ChunkedDecoder::Event ChunkedDecoder::next(const char*& p, const char* end) {
  const char* begin = p;
  Event event = Event::need_more;
  if (state_ == State::done) return Event::done;
  if (state_ == State::error) return Event::error;
  while (p < end && event == Event::need_more) {
    auto c = static_cast<unsigned char>(*p);
    bool size_line = state_ >= State::size_first && state_ <= State::size_lf;
    if (size_line && ++line_length_ > limits_.max_line) {
      event = fail("a chunk-size line is too long", ErrorKind::line_too_long);
      break;
    }
    switch (state_) {
      case State::size_first: {
        int v = hex_value(c);
        if (v < 0) {
          event = fail("invalid chunk size");
          break;
        }
        size_ = static_cast<std::uint64_t>(v);
        ++p;
        state_ = State::size;
        break;
      }
      case State::size: {
        int v = hex_value(c);
        if (v >= 0) {
          if (size_ > (std::numeric_limits<std::uint64_t>::max() >> 4)) {
            event = fail("chunk size overflow");
            break;
          }
          size_ = size_ * 16 + static_cast<std::uint64_t>(v);
          ++p;
        } else if (c == ';') {
          ++p;
          state_ = State::ext_name_bws;
        } else if (is_ws(c)) {
          ++p;
          state_ = State::ext_bws;
        } else if (c == '\r') {
          ++p;
          state_ = State::size_lf;
        } else {
          event = fail("invalid character in chunk size");
        }
        break;
      }
      case State::ext_bws:  // BWS is only allowed before ';'
        if (is_ws(c)) {
          ++p;
        } else if (c == ';') {
          ++p;
          state_ = State::ext_name_bws;
        } else {
          event = fail("invalid chunk extension");
        }
        break;
      case State::ext_name_bws:
        if (is_ws(c)) {
          ++p;
        } else if (is_tchar(c)) {
          ++p;
          state_ = State::ext_name;
        } else {
          event = fail("invalid chunk extension name");
        }
        break;
      case State::ext_name:
        if (is_tchar(c)) {
          ++p;
        } else if (c == '=') {
          ++p;
          state_ = State::ext_value_bws;
        } else if (c == ';') {
          ++p;
          state_ = State::ext_name_bws;
        } else if (is_ws(c)) {
          ++p;
          state_ = State::ext_name_end;
        } else if (c == '\r') {
          ++p;
          state_ = State::size_lf;
        } else {
          event = fail("invalid chunk extension name");
        }
        break;
      case State::ext_name_end:
        if (is_ws(c)) {
          ++p;
        } else if (c == '=') {
          ++p;
          state_ = State::ext_value_bws;
        } else if (c == ';') {
          ++p;
          state_ = State::ext_name_bws;
        } else {
          event = fail("invalid chunk extension");
        }
        break;
      case State::ext_value_bws:
        if (is_ws(c)) {
          ++p;
        } else if (c == '"') {
          ++p;
          state_ = State::ext_value_quoted;
        } else if (is_tchar(c)) {
          ++p;
          state_ = State::ext_value_token;
        } else {
          event = fail("invalid chunk extension value");
        }
        break;
      case State::ext_value_token:
        if (is_tchar(c)) {
          ++p;
        } else if (c == ';') {
          ++p;
          state_ = State::ext_name_bws;
        } else if (is_ws(c)) {
          ++p;
          state_ = State::ext_bws;
        } else if (c == '\r') {
          ++p;
          state_ = State::size_lf;
        } else {
          event = fail("invalid chunk extension value");
        }
        break;
      case State::ext_value_quoted:
        if (c == '"') {
          ++p;
          state_ = State::ext_after_value;
        } else if (c == '\\') {
          ++p;
          state_ = State::ext_value_escape;
        } else if (is_qdtext(c)) {
          ++p;
        } else {
          event = fail("invalid chunk extension value");
        }
        break;
      case State::ext_value_escape:
        if (!is_quoted_pair_char(c)) {
          event = fail("invalid chunk extension value");
          break;
        }
        ++p;
        state_ = State::ext_value_quoted;
        break;
      case State::ext_after_value:
        if (c == ';') {
          ++p;
          state_ = State::ext_name_bws;
        } else if (is_ws(c)) {
          ++p;
          state_ = State::ext_bws;
        } else if (c == '\r') {
          ++p;
          state_ = State::size_lf;
        } else {
          event = fail("invalid chunk extension");
        }
        break;
      case State::size_lf:
        if (c != '\n') {
          event = fail("a chunk-size line is not ended by CRLF");
          break;
        }
        ++p;
        line_length_ = 0;
        if (size_ == 0) {
          state_ = State::trailer_start;
        } else {
          remaining_ = size_;
          state_ = State::data;
          event = Event::chunk_start;
        }
        break;
      case State::data: {
        auto avail = static_cast<std::uint64_t>(end - p);
        auto n = static_cast<std::size_t>(remaining_ < avail ? remaining_ : avail);
        data_ = std::string_view(p, n);
        p += n;
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::data_cr;
        event = Event::data;
        break;
      }
      case State::data_cr:
        if (c != '\r') {
          event = fail("chunk data is not followed by CRLF");
          break;
        }
        ++p;
        state_ = State::data_lf;
        break;
      case State::data_lf:
        if (c != '\n') {
          event = fail("chunk data is not followed by CRLF");
          break;
        }
        ++p;
        state_ = State::size_first;
        event = Event::chunk_end;
        break;
      case State::trailer_start:
        if (c == '\r') {
          ++p;
          state_ = State::final_lf;
        } else if (c == '\n') {
          event = fail("the last chunk is not ended by CRLF");
        } else if (is_ws(c)) {
          event = fail("obsolete line folding in the trailer section");
        } else {
          line_.clear();
          state_ = State::trailer_line;
        }
        break;
      case State::trailer_line: {
        const char* stop = p;
        while (stop < end && *stop != '\r' && *stop != '\n') ++stop;
        auto n = static_cast<std::size_t>(stop - p);
        if (trailer_bytes_ + n > limits_.max_trailer_bytes) {
          event = fail("the trailer section is too large", ErrorKind::trailers_too_large);
          break;
        }
        line_.append(p, n);
        trailer_bytes_ += n;
        p = stop;
        if (stop == end) break;
        if (*stop == '\n') {
          event = fail("a line of the trailer section is not ended by CRLF");
          break;
        }
        ++p;
        state_ = State::trailer_lf;
        break;
      }
      case State::trailer_lf:
        if (c != '\n') {
          event = fail("a line of the trailer section is not ended by CRLF");
          break;
        }
        ++p;
        trailer_bytes_ += 2;
        event = finish_trailer();
        break;
      case State::final_lf:
        if (c != '\n') {
          event = fail("the last chunk is not ended by CRLF");
          break;
        }
        ++p;
        state_ = State::done;
        event = Event::done;
        break;
      case State::done:
      case State::error:
        break;  // handled before the loop
    }
  }
  consumed_ += static_cast<std::uint64_t>(p - begin);
  return event;
}

}  // namespace bulwark
