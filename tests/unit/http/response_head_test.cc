#include "http/response_head.h"

#include <doctest/doctest.h>
#include <llhttp.h>

#include <random>
#include <string>
#include <vector>

using namespace bulwark;
using namespace std::string_literals;

namespace {

// What llhttp makes of a response, collected by its callbacks.
struct LlhttpView {
  llhttp_errno_t error = HPE_OK;
  int status = 0;
  int minor = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> fields;
  bool in_value = false;
  bool head_request = false;
  bool has_content_length = false;
  std::uint64_t content_length = 0;
  bool chunked = false;
  bool complete = false;
  bool keep_alive = false;
};

LlhttpView* view(llhttp_t* p) { return static_cast<LlhttpView*>(p->data); }

LlhttpView run_llhttp(const std::string& bytes, bool head_request) {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_status = [](llhttp_t* p, const char* at, std::size_t n) {
    view(p)->reason.append(at, n);
    return 0;
  };
  s.on_header_field = [](llhttp_t* p, const char* at, std::size_t n) {
    LlhttpView* v = view(p);
    if (v->fields.empty() || v->in_value) v->fields.emplace_back();
    v->in_value = false;
    v->fields.back().first.append(at, n);
    return 0;
  };
  s.on_header_value = [](llhttp_t* p, const char* at, std::size_t n) {
    view(p)->in_value = true;
    view(p)->fields.back().second.append(at, n);
    return 0;
  };
  s.on_headers_complete = [](llhttp_t* p) {
    LlhttpView* v = view(p);
    v->status = p->status_code;
    v->minor = p->http_minor;
    v->has_content_length = (p->flags & F_CONTENT_LENGTH) != 0;
    v->content_length = p->content_length;
    v->chunked = (p->flags & F_CHUNKED) != 0;
    // As the upstream connection does: no body after HEAD, 204 and 304.
    return v->head_request || p->status_code == 204 || p->status_code == 304 ? 1 : 0;
  };
  s.on_message_complete = [](llhttp_t* p) {
    view(p)->complete = true;
    view(p)->keep_alive = llhttp_should_keep_alive(p);
    return 0;
  };
  llhttp_t parser;
  llhttp_init(&parser, HTTP_RESPONSE, &s);
  LlhttpView v;
  v.head_request = head_request;
  parser.data = &v;
  v.error = llhttp_execute(&parser, bytes.data(), bytes.size());
  return v;
}

struct Fast {
  std::size_t length = 0;
  HeaderBlock headers;
  std::string reason;
  PlainResponseHead head;
};

Fast run_fast(const std::string& bytes, bool head_request, std::size_t limit = 65536) {
  Fast f;
  f.length = parse_plain_response_head(bytes.data(), bytes.size(), limit, head_request, f.headers,
                                       f.reason, f.head);
  return f;
}

// A random response head made of usual and unusual pieces.
std::string random_head(std::mt19937& rng) {
  auto pick = [&](const std::vector<std::string>& from) {
    return from[std::uniform_int_distribution<std::size_t>(0, from.size() - 1)(rng)];
  };
  static const std::vector<std::string> versions = {"HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0",
                                                    "HTTP/1.2", "HTTP/2.0", "HTTP/1.x", "http/1.1"};
  static const std::vector<std::string> statuses = {"200", "200", "204", "304", "404", "503",
                                                    "101", "100", "199", "600", "099", "20"};
  static const std::vector<std::string> reasons = {" OK", " OK", " Not Found", "", " ", "  two",
                                                   " a\tb", " \x80\xff", " x\x01", " x\x7f",
                                                   " trailing  ", "\tOK"};
  static const std::vector<std::string> fields = {
      "Server: nginx", "Date: Mon, 07 Dec 2026 23:00:00 GMT", "Content-Type: text/plain",
      "Content-Length: 5", "Content-Length: 0", "content-length:12", "Content-Length:  7  ",
      "Content-Length: 5, 5", "Content-Length: -1", "Content-Length: +5", "Content-Length: ",
      "Content-Length: 99999999999999999999", "Content-Length: 000000000000000005",
      "Content-Length: 5\x01", "Transfer-Encoding: chunked", "Transfer-Encoding: Chunked",
      "Transfer-Encoding: gzip, chunked", "Transfer-Encoding: chunked, gzip",
      "Transfer-Encoding: chunked ", "Transfer-Encoding: identity", "Connection: close",
      "Connection: keep-alive", "Connection: Keep-Alive", "Connection: upgrade",
      "Connection: close, keep-alive", "Connection: ", "Connection: CLOSE", "Upgrade: h2c",
      "Proxy-Connection: close", "Keep-Alive: timeout=5", "X-Empty:", "X-Tab:\tv\t",
      "X-Trail: v  ", "X-Lead:    v", "X-Obs: \x80\xfe", "X-Ctl: a\x01b", "X-Del: a\x7f",
      "X-Nul: a\0b"s, "Bad Name: x", "Bad@Name: x", ": empty name", "X-Space : x", "X-Colon::x",
      "X-Fold: a\r\n folded",
      // Long values: the parser checks them eight bytes at a time.
      "X-Long-Ctl: abcdefghij\x01klmnopqrstu", "X-Long-Del: abcdefghijklmn\x7fopq",
      "X-Long-Tab: abcdefgh\tijklmnop\tqrstuvwx\t", "X-Long-High: \x80\x81\x82\x83\x84\x85\x86\x87\xfe\xff",
      "X-Long-Nul: abcdefghijk\x00lmnop"s, "X-Long-LF: abcdefghijklmnopq\nrstuvwxyz",
      "X-Long-CR: abcdefghijklmnopq\rrstuvwxyz", "X-Long-Ok: abcdefghijklmnopqrstuvwxyz0123456789",
      // A trailing tab: whitespace to RFC 9110, not to llhttp in the framing fields.
      "Content-Length: 5\t", "Content-Length: 0 \t", "Transfer-Encoding: chunked\t",
      "Connection: keep-alive\t", "Connection: close\t", "Content-Length: \t5", "X-Bare: a\nX-Next: b", "X-CR: a\rb", "Set-Cookie: a=b; Path=/"};
  static const std::vector<std::string> usual = {
      "Server: nginx", "Content-Type: text/plain", "Content-Length: 5", "Content-Length: 0",
      "Transfer-Encoding: chunked", "Connection: keep-alive", "Connection: close",
      "Cache-Control: no-cache", "ETag: \"abc\""};
  std::string head;
  if (std::uniform_int_distribution<int>(0, 3)(rng) == 0)
    head = pick(versions) + " " + pick(statuses) + pick(reasons) + "\r\n";
  else
    head = pick({"HTTP/1.1", "HTTP/1.0"}) + " " + pick({"200", "204", "304", "404"}) + " OK\r\n";
  int n = std::uniform_int_distribution<int>(0, 6)(rng);
  for (int i = 0; i < n; ++i) {
    std::string f = std::uniform_int_distribution<int>(0, 2)(rng) == 0 ? pick(fields) : pick(usual);
    head += f;
    head += std::uniform_int_distribution<int>(0, 30)(rng) == 0 ? "\n" : "\r\n";
  }
  head += std::uniform_int_distribution<int>(0, 30)(rng) == 0 ? "\n" : "\r\n";
  return head;
}

// The body that completes the message the fast parser read, for llhttp to finish it too.
std::string body_for(const Fast& f, bool head_request) {
  if (head_request || f.head.status == 204 || f.head.status == 304) return "";
  if (f.head.chunked) return "3\r\nabc\r\n0\r\n\r\n";
  return std::string(static_cast<std::size_t>(f.head.content_length), 'x');
}

}  // namespace

TEST_CASE("a plain head is read with the meaning llhttp gives it, and anything else is left to llhttp") {
  std::mt19937 rng(20261207);
  int accepted = 0, declined = 0, llhttp_errors_declined = 0;
  for (int round = 0; round < 60000; ++round) {
    std::string head = random_head(rng);
    bool head_request = round % 7 == 0;
    Fast f = run_fast(head, head_request);
    if (f.length == 0) {
      ++declined;
      if (run_llhttp(head, head_request).error != HPE_OK) ++llhttp_errors_declined;
      continue;
    }
    ++accepted;
    CAPTURE(head);
    CAPTURE(head_request);
    REQUIRE(f.length == head.find("\r\n\r\n") + 4);
    LlhttpView v = run_llhttp(head + body_for(f, head_request), head_request);
    REQUIRE(v.error == HPE_OK);
    REQUIRE(v.complete);
    CHECK(v.status == f.head.status);
    CHECK(v.minor == f.head.minor_version);
    CHECK(v.reason == f.reason);
    CHECK(v.has_content_length == f.head.has_content_length);
    if (v.has_content_length) CHECK(v.content_length == f.head.content_length);
    CHECK(v.chunked == f.head.chunked);
    CHECK(v.keep_alive == f.head.keep_alive);
    REQUIRE(v.fields.size() == f.headers.size());
    for (std::size_t i = 0; i < v.fields.size(); ++i) {
      CHECK(v.fields[i].first == f.headers.name(i));
      CHECK(v.fields[i].second == f.headers.value(i));
    }
  }
  // Both kinds were seen many times, and every head llhttp refuses was declined.
  CHECK(accepted > 5000);
  CHECK(declined > 5000);
  CHECK(llhttp_errors_declined > 1000);
}

TEST_CASE("a plain head: what it reads") {
  Fast f = run_fast(
      "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 19\r\nConnection: keep-alive\r\n\r\n"
      "hello",
      false);
  CHECK(f.length == 78);
  CHECK(f.head.status == 200);
  CHECK(f.reason == "OK");
  CHECK(f.head.has_content_length);
  CHECK(f.head.content_length == 19);
  CHECK_FALSE(f.head.chunked);
  CHECK(f.head.keep_alive);
  REQUIRE(f.headers.size() == 3);
  CHECK(f.headers.name(0) == "Server");
  CHECK(f.headers.value(0) == "nginx");

  Fast c = run_fast("HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                    false);
  CHECK(c.length > 0);
  CHECK(c.head.chunked);
  CHECK_FALSE(c.head.keep_alive);

  // HTTP/1.0 keeps the connection only when told to.
  CHECK_FALSE(run_fast("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).head.keep_alive);
  CHECK(run_fast("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n", false)
            .head.keep_alive);
  // No body after HEAD, 204 or 304: no framing needed.
  CHECK(run_fast("HTTP/1.1 200 OK\r\n\r\n", true).length > 0);
  CHECK(run_fast("HTTP/1.1 204 No Content\r\n\r\n", false).length > 0);
}

TEST_CASE("a plain head: what it leaves to the general parser") {
  // A body delimited by the connection's close.
  CHECK(run_fast("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", false).length == 0);
  // Interim and switching responses.
  CHECK(run_fast("HTTP/1.1 100 Continue\r\n\r\n", false).length == 0);
  CHECK(run_fast("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", false).length == 0);
  // Incomplete, or longer than the limit.
  std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  CHECK(run_fast(head.substr(0, head.size() - 1), false).length == 0);
  CHECK(run_fast(head, false, head.size() - 1).length == 0);
  CHECK(run_fast(head, false, head.size()).length == head.size());
  // Bare LF line ends, obs-fold, both framings, two lengths, a coding other than chunked.
  CHECK(run_fast("HTTP/1.1 200 OK\nContent-Length: 0\n\n", false).length == 0);
  CHECK(run_fast("HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", false).length == 0);
  CHECK(run_fast("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                 false).length == 0);
  CHECK(run_fast("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", false)
            .length == 0);
  CHECK(run_fast("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).length == 0);
  CHECK(run_fast("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false).length == 0);
}
