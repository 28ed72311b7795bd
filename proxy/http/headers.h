// HeaderBlock stores one message head as parsed (names and values in one reused buffer,
// so a keep-alive connection allocates nothing per request in steady state), and the
// functions here turn a parsed head into the head Bulwark forwards: hop-by-hop headers
// dropped, forwarding headers added, the body re-framed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bulwark {

// ASCII case-insensitive equality of two byte strings of the same length.
bool iequals_bytes(const char* a, const char* b, std::size_t n);
// Most comparisons are of names of different lengths: those stop here, inline.
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && iequals_bytes(a.data(), b.data(), a.size());
}
// Without leading and trailing spaces and tabs (OWS).
std::string_view trim(std::string_view s);
// ASCII upper case to lower case in place (field names are tokens: no locale involved).
void ascii_lower_in_place(char* p, std::size_t n);

namespace detail {
// kTchar[c] is true for the tchar bytes of RFC 9110 5.6.2: one load per byte on the hot path
// (every field name of every request and response is checked).
struct TcharTable {
  bool set[256] = {};
  constexpr TcharTable() {
    for (int c = '0'; c <= '9'; ++c) set[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) set[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) set[c] = true;
    for (char c : {'!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~'})
      set[static_cast<unsigned char>(c)] = true;
  }
};
inline constexpr TcharTable kTchar{};
}  // namespace detail

// tchar (RFC 9110 5.6.2).
inline bool is_tchar(unsigned char c) { return detail::kTchar.set[c]; }
// A field value's bytes (RFC 9110 5.5): VCHAR, obs-text, SP and HTAB; also what a reason
// phrase and a quoted-pair may hold.
inline bool is_field_value_char(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }
// A non-empty token (RFC 9110 5.6.2), which is what a field name must be.
inline bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (!is_tchar(c)) return false;
  return true;
}

class HeaderBlock {
 public:
  void clear();
  // Parser callbacks may deliver a name or value in several pieces.
  void append_name(const char* data, std::size_t len);
  void append_value(const char* data, std::size_t len);
  // The current value is complete: trailing whitespace (OWS, RFC 9110 5.5) is dropped.
  void end_value();
  // A whole field at once (after any append_* field is complete).
  void add(std::string_view name, std::string_view value);

  std::size_t size() const { return fields_.size(); }
  std::string_view name(std::size_t i) const {
    return {buf_.data() + fields_[i].name_offset, fields_[i].name_length};
  }
  std::string_view value(std::size_t i) const {
    return {buf_.data() + fields_[i].value_offset, fields_[i].value_length};
  }
  // First value of a header (case-insensitive name), or "" when absent.
  std::string_view get(std::string_view name) const;
  int count(std::string_view name) const;

 private:
  struct Field {
    std::uint32_t name_offset, name_length, value_offset, value_length;
  };
  std::string buf_;
  std::vector<Field> fields_;
  bool in_value_ = false;
};

// What a request's Transfer-Encoding lines say (RFC 9112 6.1, 6.3).
enum class TransferCoding {
  absent,       // no Transfer-Encoding line
  chunked,      // exactly "chunked"
  invalid,      // empty, chunked twice, or chunked not the final coding: 400
  unsupported,  // other codings before a final chunked (gzip, identity...): 501
};

// What the proxy needs to know about a request head, found in one pass.
struct RequestInfo {
  std::string_view host;        // Host header, port included
  std::string_view request_id;  // existing X-Request-Id
  std::string_view upgrade;     // Upgrade header value
  int host_count = 0;
  int content_length_count = 0;
  int transfer_encoding_count = 0;  // lines, empty ones included
  bool connection_close = false;
  bool connection_keep_alive = false;
  bool connection_upgrade = false;
  bool expect_continue = false;
  bool expect_other = false;  // an Expect other than 100-continue
  std::string_view grpc_timeout;  // a gRPC client's deadline (its first grpc-timeout)
  bool grpc = false;              // content-type application/grpc (http/grpc.h)
};

RequestInfo inspect_request(const HeaderBlock& headers);

// Classifies the transfer codings of every Transfer-Encoding line, in order. `coding` is set
// to the first offending coding (for the reply's detail) when the result is not absent or
// chunked.
TransferCoding transfer_coding(const HeaderBlock& headers, std::string_view* coding = nullptr);

// True for headers that never cross the proxy (RFC 9110 7.6.1), and for framing headers
// that the proxy re-writes itself.
bool is_hop_by_hop(std::string_view name);
// Whether a request trailer field may go on to the upstream: not what only the head may
// carry (framing, routing, hop-by-hop fields, those `head` lists in Connection) nor the ones
// Bulwark sets (X-Forwarded-For, X-Forwarded-Proto, X-Request-Id).
bool forwardable_trailer(const HeaderBlock& head, std::string_view name);
// True when `name` is listed in a Connection header's tokens.
bool listed_in_connection(const HeaderBlock& headers, std::string_view name);
// Whether a Connection header lists a field to drop that is not hop-by-hop already: any token
// but the connection options close, keep-alive and upgrade ("Close" is a reserved field name,
// RFC 9110 16.3.2.2). Without one, listed_in_connection needs no call per field.
bool connection_lists_fields(const HeaderBlock& headers);

enum class BodyFraming { none, content_length, chunked };

struct UpstreamRequestHead {
  std::string_view method;
  std::string_view target;  // origin-form path and query
  std::string_view host;    // the Host to send: always written, first, exactly once
  std::string_view client_ip;
  std::string_view request_id;  // the id to send (kept or generated)
  BodyFraming framing = BodyFraming::none;
  std::uint64_t content_length = 0;
  std::string_view upgrade;  // non-empty: forward as an upgrade request
  bool https = false;        // the client connection is TLS: X-Forwarded-Proto: https
  // Non-zero: a gRPC request's deadline as Bulwark enforces it, sent as grpc-timeout (in
  // milliseconds) instead of the client's.
  std::uint64_t grpc_timeout_ms = 0;
};

// Serializes the upstream request head (HTTP/1.1) into `out` (cleared first). The client's
// Host lines are replaced by head.host; its X-Forwarded-For lines are combined into one,
// with the client's address appended.
void write_upstream_request_head(std::string& out, const HeaderBlock& headers,
                                 const UpstreamRequestHead& head);

struct DownstreamResponseHead {
  int status = 200;
  std::string_view reason;
  int minor_version = 1;  // the client's HTTP/1.x version
  BodyFraming framing = BodyFraming::none;
  std::uint64_t content_length = 0;
  bool close = false;           // announce Connection: close
  bool keep_alive_1_0 = false;  // announce Connection: keep-alive (HTTP/1.0 client)
  std::string_view upgrade;     // 101: the protocol switched to
  std::string_view extra;       // pre-formatted extra header lines ("Name: v\r\n"...)
};

void write_downstream_response_head(std::string& out, const HeaderBlock& headers,
                                    const DownstreamResponseHead& head);

// An interim (1xx) response for an HTTP/1.1 client: status line and end-to-end headers.
void write_interim_response_head(std::string& out, const HeaderBlock& headers, int status,
                                 std::string_view reason);

// The end of a chunked body: the last chunk and the end-to-end fields of `trailers`.
void write_last_chunk(std::string& out, const HeaderBlock& trailers);

// Extracts the origin-form target from an absolute-form one ("http://h/p?q" -> "/p?q");
// origin-form is returned unchanged. A fragment ("#...") is never part of the result.
// Returns "" for an unusable target.
std::string_view origin_form(std::string_view target);
// The authority of an absolute-form target ("http://u@a.example:8080/x" -> "a.example:8080",
// userinfo dropped), or "" for any other form.
std::string_view target_authority(std::string_view target);
// The path part of an origin-form target (before '?').
std::string_view target_path(std::string_view target);
// Host without port, for matching ("Example.com:80" -> "Example.com").
std::string_view host_without_port(std::string_view host);
// True if `host` is a valid Host field value: uri-host [":" port] (RFC 9110 7.2, RFC 3986
// 3.2.2), i.e. an IP-literal in brackets or a reg-name/IPv4 address, then optional digits.
bool valid_host_value(std::string_view host);

const char* status_reason(int status);

}  // namespace bulwark
