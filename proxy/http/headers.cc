#include "http/headers.h"

#include <charconv>
#include <cstring>

#include "http/grpc.h"

namespace bulwark {

using namespace std::string_view_literals;

static inline unsigned char ascii_lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<unsigned char>(c | 0x20) : c;
}

namespace {
// Eight bytes at a time: 'A'..'Z' get bit 0x20 set, every other byte (non-ASCII included) is
// left as it is. The per-byte sums below cannot carry into the next byte: each operand's
// byte is at most 0x7f + 0x3f.
inline std::uint64_t ascii_lower8(std::uint64_t x) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
  std::uint64_t low7 = x & (0x7f * kOnes);
  std::uint64_t ge_a = low7 + (0x80 - 'A') * kOnes;  // high bit set where byte >= 'A'
  std::uint64_t gt_z = low7 + (0x7f - 'Z') * kOnes;  // high bit set where byte > 'Z'
  std::uint64_t upper = ge_a & ~gt_z & ~x & (0x80 * kOnes);
  return x | (upper >> 2);
}

inline std::uint64_t load8(const char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
}  // namespace

// Header names and values are compared on every request: eight bytes per step, the last
// step overlapping the one before it when the length is not a multiple of eight.
bool iequals_bytes(const char* a, const char* b, std::size_t n) {
  if (n < 8) {
    for (std::size_t i = 0; i < n; ++i)
      if (ascii_lower(static_cast<unsigned char>(a[i])) !=
          ascii_lower(static_cast<unsigned char>(b[i])))
        return false;
    return true;
  }
  for (std::size_t i = 0; i + 8 < n; i += 8)
    if (ascii_lower8(load8(a + i)) != ascii_lower8(load8(b + i))) return false;
  return ascii_lower8(load8(a + n - 8)) == ascii_lower8(load8(b + n - 8));
}

void ascii_lower_in_place(char* p, std::size_t n) {
  for (char* end = p + n; p != end; ++p)
    *p = static_cast<char>(ascii_lower(static_cast<unsigned char>(*p)));
}

void HeaderBlock::clear() {
  buf_.clear();
  fields_.clear();
  in_value_ = false;
}

void HeaderBlock::append_name(const char* data, std::size_t len) {
  if (fields_.empty() || in_value_) {
    auto at = static_cast<std::uint32_t>(buf_.size());
    fields_.push_back({at, 0, at, 0});
    in_value_ = false;
  }
  buf_.append(data, len);
  fields_.back().name_length += static_cast<std::uint32_t>(len);
  fields_.back().value_offset = static_cast<std::uint32_t>(buf_.size());
}

void HeaderBlock::append_value(const char* data, std::size_t len) {
  if (fields_.empty()) return;
  if (!in_value_) {
    fields_.back().value_offset = static_cast<std::uint32_t>(buf_.size());
    in_value_ = true;
  }
  buf_.append(data, len);
  fields_.back().value_length += static_cast<std::uint32_t>(len);
}

void HeaderBlock::end_value() {
  if (fields_.empty()) return;
  Field& f = fields_.back();
  if (!in_value_) {  // an empty value: the field is complete all the same
    f.value_offset = static_cast<std::uint32_t>(buf_.size());
    in_value_ = true;
  }
  while (f.value_length > 0) {
    char c = buf_[f.value_offset + f.value_length - 1];
    if (c != ' ' && c != '\t') break;
    --f.value_length;
  }
  buf_.resize(f.value_offset + f.value_length);
}

void HeaderBlock::add(std::string_view n, std::string_view v) {
  auto at = static_cast<std::uint32_t>(buf_.size());
  auto name_length = static_cast<std::uint32_t>(n.size());
  fields_.push_back({at, name_length, at + name_length, static_cast<std::uint32_t>(v.size())});
  buf_.append(n).append(v);
  in_value_ = true;  // a following append_name starts a new field
}

std::string_view HeaderBlock::get(std::string_view n) const {
  for (std::size_t i = 0; i < fields_.size(); ++i)
    if (iequals(name(i), n)) return value(i);
  return {};
}

int HeaderBlock::count(std::string_view n) const {
  int c = 0;
  for (std::size_t i = 0; i < fields_.size(); ++i) c += iequals(name(i), n);
  return c;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

namespace {

// Calls fn(token) for each comma-separated token of a header value.
template <typename Fn>
void for_each_token(std::string_view value, Fn&& fn) {
  while (!value.empty()) {
    auto comma = value.find(',');
    std::string_view token = trim(value.substr(0, comma));
    if (!token.empty()) fn(token);
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
}

void append_header(std::string& out, std::string_view name, std::string_view value) {
  out.append(name).append(": "sv).append(value).append("\r\n"sv);
}

void append_uint(std::string& out, std::uint64_t v) {
  char buf[24];
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  out.append(buf, static_cast<std::size_t>(ptr - buf));
}

}  // namespace

RequestInfo inspect_request(const HeaderBlock& headers) {
  RequestInfo info;
  for (std::size_t i = 0; i < headers.size(); ++i) {
    std::string_view n = headers.name(i), v = headers.value(i);
    switch (n.size()) {
      case 4:
        if (iequals(n, "host")) {
          info.host = v;
          ++info.host_count;
        }
        break;
      case 6:
        if (iequals(n, "expect")) {
          if (iequals(trim(v), "100-continue"))
            info.expect_continue = true;
          else
            info.expect_other = true;
        }
        break;
      case 7:
        if (iequals(n, "upgrade")) info.upgrade = v;
        break;
      case 10:
        if (iequals(n, "connection")) {
          for_each_token(v, [&](std::string_view t) {
            if (iequals(t, "close"))
              info.connection_close = true;
            else if (iequals(t, "keep-alive"))
              info.connection_keep_alive = true;
            else if (iequals(t, "upgrade"))
              info.connection_upgrade = true;
          });
        }
        break;
      case 12:
        if (iequals(n, "x-request-id")) {
          info.request_id = v;
        } else if (iequals(n, "grpc-timeout")) {
          if (info.grpc_timeout.empty()) info.grpc_timeout = v;
        } else if (iequals(n, "content-type")) {
          info.grpc = is_grpc_content_type(v);
        }
        break;
      case 14:
        if (iequals(n, "content-length")) ++info.content_length_count;
        break;
      case 17:
        if (iequals(n, "transfer-encoding")) ++info.transfer_encoding_count;
        break;
    }
  }
  return info;
}

TransferCoding transfer_coding(const HeaderBlock& headers, std::string_view* coding) {
  bool present = false;
  bool chunked_last = false;  // the last coding so far is chunked
  bool invalid = false;
  bool unsupported = false;
  int codings = 0;
  std::string_view offending;
  for (std::size_t i = 0; i < headers.size(); ++i) {
    if (!iequals(headers.name(i), "transfer-encoding")) continue;
    present = true;
    // Empty list elements (",chunked", "chunked,,") are refused rather than skipped: a parser
    // in front of Bulwark may read such a value differently.
    std::string_view v = headers.value(i);
    for (std::string_view rest = v;;) {
      std::size_t comma = rest.find(',');
      if (trim(rest.substr(0, comma)).empty() && !trim(v).empty()) {
        if (!invalid && !unsupported) offending = v;
        invalid = true;
      }
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    for_each_token(v, [&](std::string_view t) {
      ++codings;
      std::string_view name = trim(t.substr(0, t.find(';')));
      bool chunked = iequals(name, "chunked");
      // Nothing may follow chunked (applied once, and last); chunked takes no parameters;
      // every coding is a token.
      if (chunked_last || !is_token(name) || (chunked && name.size() != t.size())) {
        if (!invalid && !unsupported) offending = t;
        invalid = true;
      } else if (!chunked && !unsupported) {
        if (!invalid) offending = name;
        unsupported = true;
      }
      chunked_last = chunked;
    });
  }
  if (!present) return TransferCoding::absent;
  if (codings == 0 || !chunked_last) invalid = true;
  if (coding) *coding = offending;
  if (invalid) return TransferCoding::invalid;
  if (unsupported) return TransferCoding::unsupported;
  return TransferCoding::chunked;
}

bool is_hop_by_hop(std::string_view n) {
  switch (n.size()) {
    case 2:
      return iequals(n, "te");
    case 7:
      return iequals(n, "trailer") || iequals(n, "upgrade");
    case 10:
      return iequals(n, "connection") || iequals(n, "keep-alive");
    case 14:
      return iequals(n, "content-length");
    case 16:
      return iequals(n, "proxy-connection");
    case 17:
      return iequals(n, "transfer-encoding");
    default:
      return false;
  }
}

bool forwardable_trailer(const HeaderBlock& head, std::string_view name) {
  return !(is_hop_by_hop(name) || iequals(name, "host") || iequals(name, "x-forwarded-for") ||
           iequals(name, "x-forwarded-proto") || iequals(name, "x-request-id") ||
           listed_in_connection(head, name));
}

bool listed_in_connection(const HeaderBlock& headers, std::string_view name) {
  bool found = false;
  for (std::size_t i = 0; i < headers.size() && !found; ++i) {
    if (!iequals(headers.name(i), "connection")) continue;
    for_each_token(headers.value(i),
                   [&](std::string_view t) { found = found || iequals(t, name); });
  }
  return found;
}

bool connection_lists_fields(const HeaderBlock& headers) {
  bool listed = false;
  for (std::size_t i = 0; i < headers.size(); ++i) {
    if (!iequals(headers.name(i), "connection")) continue;
    std::string_view v = headers.value(i);
    if (iequals(v, "keep-alive") || iequals(v, "close")) continue;  // the usual values
    for_each_token(v, [&](std::string_view t) {
      if (!iequals(t, "close") && !iequals(t, "keep-alive") && !iequals(t, "upgrade"))
        listed = true;
    });
  }
  return listed;
}

namespace {

// Copies the end-to-end headers. `skip_forwarding` drops the ones the proxy rewrites.
void copy_end_to_end(std::string& out, const HeaderBlock& headers, bool skip_forwarding,
                     bool skip_expect, bool skip_grpc_timeout = false) {
  bool has_connection_list = connection_lists_fields(headers);
  for (std::size_t i = 0; i < headers.size(); ++i) {
    std::string_view n = headers.name(i);
    if (is_hop_by_hop(n)) continue;
    // The request side writes Host and the forwarding headers itself (so Connection can
    // never remove them).
    if (skip_forwarding && (iequals(n, "host") || iequals(n, "x-forwarded-for") ||
                            iequals(n, "x-forwarded-proto") || iequals(n, "x-request-id")))
      continue;
    if (skip_expect && iequals(n, "expect")) continue;
    if (skip_grpc_timeout && iequals(n, "grpc-timeout")) continue;
    if (has_connection_list && listed_in_connection(headers, n)) continue;
    append_header(out, n, headers.value(i));
  }
}

// The framing headers of a re-framed body.
void append_framing(std::string& out, BodyFraming framing, std::uint64_t content_length) {
  if (framing == BodyFraming::content_length) {
    out.append("Content-Length: "sv);
    append_uint(out, content_length);
    out.append("\r\n"sv);
  } else if (framing == BodyFraming::chunked) {
    out.append("Transfer-Encoding: chunked\r\n"sv);
  }
}

void append_upgrade(std::string& out, std::string_view protocol) {
  out.append("Connection: upgrade\r\n"sv);
  append_header(out, "Upgrade", protocol);
}

}  // namespace

void write_upstream_request_head(std::string& out, const HeaderBlock& headers,
                                 const UpstreamRequestHead& head) {
  out.clear();
  out.append(head.method).append(" "sv).append(head.target).append(" HTTP/1.1\r\n"sv);
  append_header(out, "Host", head.host);
  copy_end_to_end(out, headers, true, true, head.grpc_timeout_ms != 0);
  // Several X-Forwarded-For lines are one list (RFC 9110 5.3), in order.
  out.append("X-Forwarded-For: "sv);
  for (std::size_t i = 0; i < headers.size(); ++i) {
    if (!iequals(headers.name(i), "x-forwarded-for")) continue;
    std::string_view v = trim(headers.value(i));
    if (!v.empty()) out.append(v).append(", "sv);
  }
  out.append(head.client_ip).append("\r\n"sv);
  out.append(head.https ? "X-Forwarded-Proto: https\r\n"sv : "X-Forwarded-Proto: http\r\n"sv);
  append_header(out, "X-Request-Id", head.request_id);
  if (head.grpc_timeout_ms) {
    // At most 8 digits (the gRPC spec): milliseconds up to 27 hours, then seconds.
    out.append("grpc-timeout: "sv);
    if (head.grpc_timeout_ms <= 99'999'999) {
      append_uint(out, head.grpc_timeout_ms);
      out.append("m\r\n"sv);
    } else {
      append_uint(out, std::min<std::uint64_t>((head.grpc_timeout_ms + 999) / 1000, 99'999'999));
      out.append("S\r\n"sv);
    }
  }
  append_framing(out, head.framing, head.content_length);
  if (!head.upgrade.empty()) append_upgrade(out, head.upgrade);
  out.append("\r\n"sv);
}

void write_downstream_response_head(std::string& out, const HeaderBlock& headers,
                                    const DownstreamResponseHead& head) {
  out.clear();
  out.append(head.minor_version == 0 ? "HTTP/1.0 "sv : "HTTP/1.1 "sv);
  append_uint(out, static_cast<std::uint64_t>(head.status));
  out.append(" "sv).append(head.reason.empty() ? status_reason(head.status) : head.reason);
  out.append("\r\n"sv);
  copy_end_to_end(out, headers, false, false);
  out.append(head.extra);
  append_framing(out, head.framing, head.content_length);
  if (!head.upgrade.empty()) {
    append_upgrade(out, head.upgrade);
  } else if (head.close) {
    out.append("Connection: close\r\n"sv);
  } else if (head.keep_alive_1_0) {
    out.append("Connection: keep-alive\r\n"sv);
  }
  out.append("\r\n"sv);
}

void write_interim_response_head(std::string& out, const HeaderBlock& headers, int status,
                                 std::string_view reason) {
  out.clear();
  out.append("HTTP/1.1 "sv);
  append_uint(out, static_cast<std::uint64_t>(status));
  out.append(" "sv).append(reason.empty() ? status_reason(status) : reason).append("\r\n"sv);
  copy_end_to_end(out, headers, false, false);
  out.append("\r\n"sv);
}

void write_last_chunk(std::string& out, const HeaderBlock& trailers) {
  out.clear();
  out.append("0\r\n"sv);
  copy_end_to_end(out, trailers, false, false);
  out.append("\r\n"sv);
}

std::string_view origin_form(std::string_view target) {
  target = target.substr(0, target.find('#'));
  if (!target.empty() && target[0] == '/') return target;
  if (target == "*") return target;
  auto scheme = target.find("://");
  if (scheme == std::string_view::npos) return {};
  auto slash = target.find('/', scheme + 3);
  if (slash == std::string_view::npos) {
    auto query = target.find('?', scheme + 3);
    return query == std::string_view::npos ? std::string_view("/") : std::string_view();
  }
  return target.substr(slash);
}

std::string_view target_authority(std::string_view target) {
  if (target.empty() || target[0] == '/') return {};
  auto scheme = target.find("://");
  if (scheme == std::string_view::npos) return {};
  std::string_view authority = target.substr(scheme + 3);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  auto at = authority.rfind('@');  // userinfo is never part of Host
  return at == std::string_view::npos ? authority : authority.substr(at + 1);
}

std::string_view target_path(std::string_view target) {
  auto q = target.find('?');
  return q == std::string_view::npos ? target : target.substr(0, q);
}

std::string_view host_without_port(std::string_view host) {
  if (!host.empty() && host[0] == '[') {
    auto close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  auto colon = host.rfind(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}

namespace {

// unreserved / sub-delims / "%" (of pct-encoded): the characters of a reg-name.
bool reg_name_char(char ch) {
  if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) return true;
  return std::string_view("-._~!$&'()*+,;=%").find(ch) != std::string_view::npos;
}

}  // namespace

bool valid_host_value(std::string_view host) {
  std::string_view port;
  if (!host.empty() && host.front() == '[') {
    auto close = host.find(']');
    if (close == std::string_view::npos) return false;
    for (char ch : host.substr(1, close - 1))
      if (ch != ':' && !reg_name_char(ch)) return false;  // IPv6, or IPvFuture
    port = host.substr(close + 1);
  } else {
    auto colon = host.find(':');
    for (char ch : host.substr(0, colon))
      if (!reg_name_char(ch)) return false;
    if (colon != std::string_view::npos) port = host.substr(colon);
  }
  if (port.empty()) return true;
  if (port.front() != ':') return false;
  for (char ch : port.substr(1))
    if (ch < '0' || ch > '9') return false;
  return true;
}

const char* status_reason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 102:
      return "Processing";
    case 103:
      return "Early Hints";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 417:
      return "Expectation Failed";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

}  // namespace bulwark
