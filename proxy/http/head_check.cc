#include "http/head_check.h"

#include <cstring>

#include "http/headers.h"

namespace bulwark {

namespace {
constexpr char kVersionPrefix[] = "HTTP/1.";
constexpr int kVersionPrefixLength = sizeof kVersionPrefix - 1;

constexpr const char* kTooLarge =
    "the response head exceeds the upstream's max_response_header_bytes";

bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
// reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ): a field value's bytes.
bool is_reason_char(unsigned char c) { return is_field_value_char(c); }
}  // namespace

void ResponseHeadScanner::start(std::uint64_t limit) {
  limit_ = limit;
  bytes_ = 0;
  next_head();
}

void ResponseHeadScanner::next_head() {
  state_ = State::version;
  line_empty_ = false;
  bare_lf_ = false;
  column_ = 0;
  status_ = 0;
  error_ = "";
}

std::size_t ResponseHeadScanner::scan_whole_head(const char* data, std::size_t len) {
  const auto* u = reinterpret_cast<const unsigned char*>(data);
  // "HTTP/1.x NNN" and then SP or CR.
  if (len < 16 || std::memcmp(data, kVersionPrefix, kVersionPrefixLength) != 0 || !is_digit(u[7]) ||
      u[8] != ' ' || !is_digit(u[9]) || !is_digit(u[10]) || !is_digit(u[11]))
    return 0;
  int status = (u[9] - '0') * 100 + (u[10] - '0') * 10 + (u[11] - '0');
  if (status < 100 || status > 599) return 0;
  std::size_t limit = limit_ - bytes_;
  std::size_t end = len < limit ? len : static_cast<std::size_t>(limit);
  std::size_t i = 12;
  bool status_line = true;
  for (;;) {
    auto* lf = static_cast<const char*>(std::memchr(data + i, '\n', end - i));
    if (!lf) return 0;  // incomplete, or over the limit: the slow path says which
    auto at = static_cast<std::size_t>(lf - data);
    if (at == i || data[at - 1] != '\r') return 0;  // a bare LF
    std::size_t line_end = at - 1;                  // the CR
    if (status_line) {
      if (line_end > 12 && u[12] != ' ') return 0;
      for (std::size_t k = 13; k < line_end; ++k)
        if (!is_reason_char(u[k])) return 0;
      status_line = false;
    } else if (line_end == i) {
      status_ = status;
      bytes_ += at + 1;
      return at + 1;  // the empty line: the head is complete
    } else if (std::memchr(data + i, '\r', line_end - i)) {
      return 0;  // a CR inside a field line
    }
    i = at + 1;
  }
}

ResponseHeadScanner::Result ResponseHeadScanner::scan(const char* data, std::size_t len,
                                                      std::size_t& consumed) {
  bare_lf_ = false;
  if (state_ == State::done) {
    consumed = 0;
    return Result::done;
  }
  if (state_ == State::version && column_ == 0) {
    if (std::size_t n = scan_whole_head(data, len)) {
      consumed = n;
      state_ = State::done;
      return Result::done;
    }
  }
  for (std::size_t i = 0; i < len; ++i) {
    if (state_ == State::field_line) {
      // Most of a head is field-line bytes that are neither CR nor LF (llhttp checks them):
      // skip them with memchr, and only the line end byte by byte.
      const char* start = data + i;
      auto* lf = static_cast<const char*>(std::memchr(start, '\n', len - i));
      std::size_t span = lf ? static_cast<std::size_t>(lf - start) : len - i;
      auto* cr = static_cast<const char*>(std::memchr(start, '\r', span));
      std::size_t plain = cr ? static_cast<std::size_t>(cr - start) : span;
      if (plain > limit_ - bytes_) {
        consumed = i + static_cast<std::size_t>(limit_ - bytes_);
        bytes_ = limit_ + 1;
        error_ = kTooLarge;
        return Result::error;
      }
      bytes_ += plain;
      i += plain;
      if (i == len) break;
    }
    auto c = static_cast<unsigned char>(data[i]);
    consumed = i;
    if (++bytes_ > limit_) {
      error_ = kTooLarge;
      return Result::error;
    }
    switch (state_) {
      case State::version:
        if (column_ < kVersionPrefixLength
                ? c != static_cast<unsigned char>(kVersionPrefix[column_])
                : !is_digit(c)) {
          error_ = "the status line does not start with HTTP/1.x";
          return Result::error;
        }
        if (++column_ == kVersionPrefixLength + 1) {
          state_ = State::code;
          column_ = 0;
        }
        break;
      case State::code:
        if (column_ == 0 ? c != ' ' : !is_digit(c)) {
          error_ = "the status line has no three-digit status code";
          return Result::error;
        }
        if (column_ > 0) status_ = status_ * 10 + (c - '0');
        if (++column_ == 4) {
          if (status_ < 100 || status_ > 599) {
            error_ = "the status code is outside 100-599";
            return Result::error;
          }
          state_ = State::after_code;
        }
        break;
      case State::after_code:
        if (c == ' ') {
          state_ = State::reason;
          break;
        }
        [[fallthrough]];
      case State::reason:
        if (c == '\r') {
          state_ = State::cr;
          line_empty_ = false;
        } else if (c == '\n') {
          bare_lf_ = true;
          state_ = State::line_start;
        } else if (state_ == State::after_code) {
          error_ = "the status code is not followed by a space";
          return Result::error;
        } else if (!is_reason_char(c)) {
          error_ = "a control character in the reason phrase";
          return Result::error;
        }
        break;
      case State::line_start:
        if (c == '\r') {
          state_ = State::cr;
          line_empty_ = true;
        } else if (c == '\n') {
          bare_lf_ = true;
          consumed = i + 1;
          state_ = State::done;
          return Result::done;
        } else {
          state_ = State::field_line;
        }
        break;
      case State::field_line:
        if (c == '\r') {
          state_ = State::cr;
          line_empty_ = false;
        } else if (c == '\n') {
          bare_lf_ = true;
          state_ = State::line_start;
        }
        break;
      case State::cr:
        if (c != '\n') {
          error_ = "a CR in the response head is not followed by LF";
          return Result::error;
        }
        if (line_empty_) {
          consumed = i + 1;
          state_ = State::done;
          return Result::done;
        }
        state_ = State::line_start;
        break;
      case State::done:
        break;  // returned above
    }
  }
  consumed = len;
  return Result::more;
}

void ResponseHeadScanner::add_crs(const char* data, std::size_t len, bool cr_before,
                                  std::string& out) {
  out.clear();
  out.reserve(len + 16);
  bool after_cr = cr_before;
  for (std::size_t i = 0; i < len; ++i) {
    if (data[i] == '\n' && !after_cr) out.push_back('\r');
    out.push_back(data[i]);
    after_cr = data[i] == '\r';
  }
}

}  // namespace bulwark
