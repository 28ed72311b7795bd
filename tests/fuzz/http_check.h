// Strict readers of the HTTP/1.1 messages the proxy emits, for the invariants of fuzz_request
// (what reaches the upstream) and fuzz_response (what reaches the client): whatever the input,
// what Bulwark forwards must be unambiguous — one framing, a valid head, a valid chunked body.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "http/chunked.h"
#include "http/headers.h"

namespace bulwark::fuzz {

struct Message {
  enum class Status { complete, incomplete, invalid };
  Status status = Status::incomplete;
  std::string why;           // invalid: what is wrong
  std::size_t length = 0;    // complete: bytes of the message
  std::string start_line;
  int code = 0;              // responses
  bool chunked = false;
  bool has_length = false;
  std::uint64_t content_length = 0;
  bool close = false;
  bool upgrade = false;
  std::string body;
};

inline bool field_value_ok(std::string_view v) {
  for (unsigned char c : v)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

inline std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// Reads one message from `in` at `pos`. `request`: a request (else a response). A response
// body without Content-Length or chunked runs to the end of `in` when `eof` (else it is
// incomplete); `no_body`: the response has none whatever its head says (HEAD, 1xx, 204, 304).
inline Message read_message(std::string_view in, std::size_t pos, bool request, bool eof,
                            bool head_request = false) {
  Message m;
  auto invalid = [&](std::string why) {
    m.status = Message::Status::invalid;
    m.why = std::move(why);
    return m;
  };
  std::size_t head_end = in.find("\r\n\r\n", pos);
  if (head_end == std::string_view::npos) {
    if (in.size() - pos > 1 << 20) return invalid("head never ends");
    return m;
  }
  std::string_view head = in.substr(pos, head_end + 2 - pos);
  std::size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  m.start_line = std::string(line);
  if (request) {
    std::size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos || !is_token(line.substr(0, sp1)))
      return invalid("bad method in '" + m.start_line + "'");
    std::size_t sp2 = line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return invalid("bad target");
    for (unsigned char c : line.substr(sp1 + 1, sp2 - sp1 - 1))
      if (c <= 0x20 || c == 0x7f) return invalid("control byte or space in the target");
    if (line.substr(sp2 + 1) != "HTTP/1.1") return invalid("version not HTTP/1.1");
  } else {
    if (line.size() < 12 || (line.substr(0, 9) != "HTTP/1.1 " && line.substr(0, 9) != "HTTP/1.0 "))
      return invalid("bad status line '" + m.start_line + "'");
    for (int i = 9; i < 12; ++i)
      if (line[i] < '0' || line[i] > '9') return invalid("bad status code");
    if (line.size() > 12 && line[12] != ' ') return invalid("no SP after the status code");
    if (!field_value_ok(line.substr(12))) return invalid("control byte in the reason");
    m.code = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    if (m.code < 100) return invalid("status below 100");
  }
  int hosts = 0, lengths = 0, encodings = 0;
  std::size_t at = eol + 2;
  while (at < head.size()) {
    std::size_t e = head.find("\r\n", at);
    std::string_view field = head.substr(at, e - at);
    at = e + 2;
    std::size_t colon = field.find(':');
    if (colon == std::string_view::npos || !is_token(field.substr(0, colon)))
      return invalid("bad field line '" + std::string(field) + "'");
    std::string_view value = field.substr(colon + 1);
    if (!field_value_ok(value)) return invalid("control byte in a field value");
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    std::string name = lower(field.substr(0, colon));
    if (name == "host") ++hosts;
    if (name == "content-length") {
      ++lengths;
      if (value.empty()) return invalid("empty Content-Length");
      std::uint64_t n = 0;
      for (char c : value) {
        if (c < '0' || c > '9') return invalid("bad Content-Length '" + std::string(value) + "'");
        std::uint64_t digit = static_cast<std::uint64_t>(c - '0');
        if (n > (~0ull - digit) / 10) return invalid("Content-Length above 2^64");
        n = n * 10 + digit;
      }
      m.has_length = true;
      m.content_length = n;
    }
    if (name == "transfer-encoding") {
      ++encodings;
      if (lower(value) != "chunked")
        return invalid("Transfer-Encoding '" + std::string(value) + "' forwarded");
      m.chunked = true;
    }
    if (name == "connection" && lower(value).find("close") != std::string::npos) m.close = true;
    if (name == "upgrade") m.upgrade = true;
  }
  if (request && hosts != 1) return invalid("Host lines: " + std::to_string(hosts));
  if (lengths > 1) return invalid("several Content-Length lines");
  if (encodings > 1) return invalid("several Transfer-Encoding lines");
  if (m.chunked && m.has_length) return invalid("both Content-Length and Transfer-Encoding");
  std::size_t body = head_end + 4;
  bool no_body = !request && (head_request || m.code < 200 || m.code == 204 || m.code == 304);
  if (!request && (m.code < 200 || m.code == 204) && (m.chunked || m.has_length))
    return invalid("framing header on a " + std::to_string(m.code));
  if (no_body) {
    m.length = body - pos;
  } else if (m.chunked) {
    ChunkedDecoder d;
    const char* p = in.data() + body;
    const char* end = in.data() + in.size();
    for (;;) {
      ChunkedDecoder::Event e = d.next(p, end);
      if (e == ChunkedDecoder::Event::need_more) return m;  // incomplete
      if (e == ChunkedDecoder::Event::error)
        return invalid(std::string("chunked body: ") + d.error());
      if (e == ChunkedDecoder::Event::data) m.body.append(d.data());
      if (e == ChunkedDecoder::Event::done) break;
    }
    m.length = static_cast<std::size_t>(p - in.data()) - pos;
  } else if (m.has_length) {
    if (in.size() - body < m.content_length) return m;
    m.body = std::string(in.substr(body, m.content_length));
    m.length = body + m.content_length - pos;
  } else if (request || m.code == 101) {
    m.length = body - pos;
  } else {
    if (!eof) return m;
    m.body = std::string(in.substr(body));
    m.length = in.size() - pos;
  }
  m.status = Message::Status::complete;
  return m;
}

// What a client received from the proxy: zero or more interim 1xx heads, then one final
// response (cut off only where the upstream failed), and nothing after it except after a 101
// when `allow_upgrade`. `head`: the request was a HEAD.
inline void check_client_responses(const std::string& out, bool head, bool allow_upgrade) {
  std::size_t pos = 0;
  while (pos < out.size()) {
    Message m = read_message(out, pos, /*request=*/false, /*eof=*/true, head);
    FUZZ_CHECK(m.status != Message::Status::invalid, "response to the client is invalid: %s\n%s",
               m.why.c_str(), out.substr(pos, 512).c_str());
    if (m.status == Message::Status::incomplete) break;  // cut off: the upstream failed
    pos += m.length;
    if (m.code == 101) {
      FUZZ_CHECK(allow_upgrade, "a 101 where no upgrade can happen");
      break;  // tunnel bytes follow
    }
    if (m.code >= 200) {
      FUZZ_CHECK(pos == out.size(), "%zu bytes after the final response:\n%s", out.size() - pos,
                 out.substr(pos, 256).c_str());
      break;
    }
  }
}

}  // namespace bulwark::fuzz
