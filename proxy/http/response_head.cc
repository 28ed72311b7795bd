#include "http/response_head.h"

#include <cstring>
#include <string_view>

namespace bulwark {
namespace {

bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

// Where the field value starting at i ends: the index of its CR, or 0 when a byte that a value
// may not hold comes first (a control byte other than HTAB, a bare LF, DEL) or no CR comes
// before `end`. Eight bytes at a time while none of them is below 0x20 or DEL.
std::size_t find_value_end(const unsigned char* u, std::size_t i, std::size_t end) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
  constexpr std::uint64_t kHighs = 0x8080808080808080ULL;
  for (;;) {
    while (i + 8 <= end) {
      std::uint64_t v;
      std::memcpy(&v, u + i, 8);
      std::uint64_t control = (v - 0x20 * kOnes) & ~v & kHighs;  // some byte < 0x20
      std::uint64_t x = v ^ (0x7f * kOnes);
      std::uint64_t del = (x - kOnes) & ~x & kHighs;  // some byte == 0x7f
      if (control | del) break;
      i += 8;
    }
    for (; i < end; ++i) {
      unsigned char c = u[i];
      if (c == '\r') return i;
      if (!is_field_value_char(c)) return 0;
      if (c < 0x20) break;  // the HTAB that stopped the word: on eight at a time
    }
    if (i >= end) return 0;
    ++i;
  }
}

// The fields that decide framing and the connection's reuse.
enum class Field { other, content_length, transfer_encoding, connection, declined };

Field classify(std::string_view name) {
  switch (name.size()) {
    case 7:
      return iequals(name, "upgrade") ? Field::declined : Field::other;
    case 10:
      return iequals(name, "connection") ? Field::connection : Field::other;
    case 14:
      return iequals(name, "content-length") ? Field::content_length : Field::other;
    case 16:
      return iequals(name, "proxy-connection") ? Field::declined : Field::other;
    case 17:
      return iequals(name, "transfer-encoding") ? Field::transfer_encoding : Field::other;
    default:
      return Field::other;
  }
}

}  // namespace

std::size_t parse_plain_response_head(const char* data, std::size_t len, std::size_t limit,
                                      bool head_request, HeaderBlock& headers,
                                      std::string& reason, PlainResponseHead& out) {
  const auto* u = reinterpret_cast<const unsigned char*>(data);
  const std::size_t end = len < limit ? len : limit;
  // "HTTP/1.x NNN", then SP and the reason phrase, or the line's end.
  if (end < 16 || std::memcmp(data, "HTTP/1.", 7) != 0 || (u[7] != '0' && u[7] != '1') ||
      u[8] != ' ' || !is_digit(u[9]) || !is_digit(u[10]) || !is_digit(u[11]))
    return 0;
  out = PlainResponseHead{};
  out.minor_version = u[7] - '0';
  out.status = (u[9] - '0') * 100 + (u[10] - '0') * 10 + (u[11] - '0');
  if (out.status < 200 || out.status > 599) return 0;
  std::size_t i = 12;
  std::size_t reason_start = i;
  if (u[i] == ' ') {
    reason_start = ++i;
    while (i < end && is_field_value_char(u[i])) ++i;
  }
  if (i + 1 >= end || u[i] != '\r' || u[i + 1] != '\n') return 0;
  reason.assign(data + reason_start, i - reason_start);
  i += 2;

  headers.clear();
  bool te = false, connection = false, close = false, keep_alive = false;
  for (;;) {
    if (i >= end) return 0;
    if (u[i] == '\r') {  // the empty line
      if (i + 1 >= end || u[i + 1] != '\n') return 0;
      i += 2;
      break;
    }
    const std::size_t name_start = i;
    while (i < end && is_tchar(u[i])) ++i;
    if (i == name_start || i >= end || u[i] != ':') return 0;
    std::string_view name(data + name_start, i - name_start);
    ++i;
    while (i < end && is_ows(u[i])) ++i;
    const std::size_t value_start = i;
    std::size_t value_end = find_value_end(u, i, end);
    if (value_end == 0 || value_end + 1 >= end || u[value_end + 1] != '\n') return 0;
    i = value_end + 2;
    // Kept with its trailing whitespace, as llhttp hands it over. Framing fields are read
    // without trailing spaces; a tab in one is declined (llhttp does not take a trailing tab
    // as whitespace there: "chunked\t" is not chunked to it, "5\t" not a length).
    std::string_view value(data + value_start, value_end - value_start);
    std::string_view word = value;
    while (!word.empty() && word.back() == ' ') word.remove_suffix(1);
    Field field = classify(name);
    if (field != Field::other && word.find('\t') != std::string_view::npos) return 0;
    switch (field) {
      case Field::other:
        break;
      case Field::declined:
        return 0;
      case Field::content_length: {
        if (out.has_content_length || word.empty() || word.size() > 18) return 0;
        std::uint64_t n = 0;
        for (unsigned char c : word) {
          if (!is_digit(c)) return 0;
          n = n * 10 + (c - '0');
        }
        out.has_content_length = true;
        out.content_length = n;
        break;
      }
      case Field::transfer_encoding:
        if (te || !iequals(word, "chunked")) return 0;
        te = true;
        break;
      case Field::connection:
        if (connection) return 0;
        connection = true;
        close = iequals(word, "close");
        keep_alive = iequals(word, "keep-alive");
        if (!close && !keep_alive) return 0;
        break;
    }
    headers.add(name, value);
  }
  if (te) {
    if (out.has_content_length || out.minor_version == 0) return 0;
    out.chunked = true;
  }
  bool body = !head_request && out.status != 204 && out.status != 304;
  if (body && !out.chunked && !out.has_content_length) return 0;  // delimited by the close
  out.keep_alive = out.minor_version == 1 ? !close : keep_alive;
  return i;
}

}  // namespace bulwark
