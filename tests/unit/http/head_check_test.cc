#include "http/head_check.h"

#include <doctest/doctest.h>

#include <string>

using namespace bulwark;

namespace {

struct Scan {
  ResponseHeadScanner::Result result;
  std::size_t consumed;  // over all pieces
  std::string error;
  bool bare_lf = false;
};

// Scans `head` in pieces of `piece` bytes (0: all at once), as reads would deliver it.
Scan scan(const std::string& head, std::size_t piece = 0, std::uint64_t limit = 65536) {
  ResponseHeadScanner s;
  s.start(limit);
  Scan out{ResponseHeadScanner::Result::more, 0, "", false};
  std::size_t step = piece ? piece : head.size();
  for (std::size_t at = 0; at < head.size(); at += step) {
    std::size_t n = 0;
    std::size_t len = std::min(step, head.size() - at);
    out.result = s.scan(head.data() + at, len, n);
    out.consumed += n;
    out.bare_lf = out.bare_lf || s.saw_bare_lf();
    if (out.result != ResponseHeadScanner::Result::more) break;
  }
  out.error = s.error();
  return out;
}

}  // namespace

TEST_CASE("a head ends at its empty line, whatever the read boundaries") {
  std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
  for (std::size_t piece : {0, 1, 2, 3, 7}) {
    INFO(piece);
    Scan r = scan(head + "hello", piece);
    CHECK(r.result == ResponseHeadScanner::Result::done);
    CHECK(r.consumed == head.size());
    CHECK_FALSE(r.bare_lf);
  }
  CHECK(scan("HTTP/1.1 200 OK\r\nX: y\r\n").result == ResponseHeadScanner::Result::more);
}

TEST_CASE("valid status lines") {
  for (const char* line : {"HTTP/1.1 200 OK", "HTTP/1.0 404 Not Found", "HTTP/1.1 200",
                           "HTTP/1.1 200 ", "HTTP/1.1 599 x\ty \x80", "HTTP/1.1 100 Continue"}) {
    INFO(line);
    CHECK(scan(std::string(line) + "\r\n\r\n").result == ResponseHeadScanner::Result::done);
  }
}

TEST_CASE("invalid status lines are refused with what is wrong") {
  struct Bad {
    const char* head;
    const char* error;
  };
  for (Bad b :
       {Bad{"garbage\r\n\r\n", "HTTP/1.x"}, Bad{"HTTP/2.0 200 OK\r\n\r\n", "HTTP/1.x"},
        Bad{"HTTP/1.x 200 OK\r\n\r\n", "HTTP/1.x"}, Bad{"HTTP/1.1 20 OK\r\n\r\n", "three-digit"},
        Bad{"HTTP/1.1  200 OK\r\n\r\n", "three-digit"},
        Bad{"HTTP/1.1 2000 OK\r\n\r\n", "not followed by a space"},
        Bad{"HTTP/1.1 200OK\r\n\r\n", "not followed by a space"},
        Bad{"HTTP/1.1 099 OK\r\n\r\n", "100-599"}, Bad{"HTTP/1.1 600 OK\r\n\r\n", "100-599"},
        Bad{"HTTP/1.1 200 O\x01K\r\n\r\n", "reason phrase"},
        Bad{"HTTP/1.1 200 O\x7fK\r\n\r\n", "reason phrase"},
        Bad{"\r\nHTTP/1.1 200 OK\r\n\r\n", "HTTP/1.x"}}) {
    INFO(b.head);
    Scan r = scan(b.head);
    CHECK(r.result == ResponseHeadScanner::Result::error);
    CHECK(r.error.find(b.error) != std::string::npos);
  }
}

TEST_CASE("a CR must be followed by LF, in the status line, field lines and the end") {
  for (const char* head : {"HTTP/1.1 200 OK\rX\r\n\r\n", "HTTP/1.1 200 OK\r\nX: y\rZ\r\n\r\n",
                           "HTTP/1.1 200 OK\r\nX: y\r\n\rX"}) {
    for (std::size_t piece : {0, 1}) {
      INFO(head, piece);
      Scan r = scan(head, piece);
      CHECK(r.result == ResponseHeadScanner::Result::error);
      CHECK(r.error.find("not followed by LF") != std::string::npos);
    }
  }
}

TEST_CASE("lone LF line ends are accepted and reported for normalisation") {
  std::string head = "HTTP/1.1 200 OK\nX: a\n b\nContent-Length: 0\n\n";
  Scan r = scan(head + "rest");
  CHECK(r.result == ResponseHeadScanner::Result::done);
  CHECK(r.consumed == head.size());
  CHECK(r.bare_lf);
  std::string fixed;
  ResponseHeadScanner::add_crs(head.data(), head.size(), false, fixed);
  CHECK(fixed == "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n");
  // A CR at the end of the previous read pairs with the LF that starts this one.
  ResponseHeadScanner::add_crs("\nX\n", 3, true, fixed);
  CHECK(fixed == "\nX\r\n");
}

TEST_CASE("the byte limit is passed at the first byte over it, 1xx heads included") {
  std::string head = "HTTP/1.1 200 OK\r\nX: " + std::string(100, 'a') + "\r\n\r\n";
  CHECK(scan(head, 0, head.size()).result == ResponseHeadScanner::Result::done);
  Scan r = scan(head, 0, head.size() - 1);
  CHECK(r.result == ResponseHeadScanner::Result::error);
  CHECK(r.consumed == head.size() - 1);
  CHECK(r.error.find("max_response_header_bytes") != std::string::npos);

  ResponseHeadScanner s;
  s.start(60);
  std::string interim = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n";  // 40 bytes
  std::size_t n = 0;
  REQUIRE(s.scan(interim.data(), interim.size(), n) == ResponseHeadScanner::Result::done);
  CHECK(s.scan("x", 1, n) == ResponseHeadScanner::Result::done);  // nothing more until next_head
  CHECK(n == 0);
  s.next_head();
  std::string final_head = "HTTP/1.1 200 OK\r\nX: 12345\r\n\r\n";  // 30 bytes: 70 in all
  CHECK(s.scan(final_head.data(), final_head.size(), n) == ResponseHeadScanner::Result::error);
  CHECK(s.bytes() == 61);
}

TEST_CASE("a whole head in one read and the same head byte by byte get the same verdict") {
  // A whole head takes a one-pass path; split heads go byte by byte. They must agree.
  for (const char* head :
       {"HTTP/1.1 200 OK\r\nA: b\r\n\r\n", "HTTP/1.1 204\r\n\r\n", "HTTP/1.0 503 Busy\r\n\r\nx",
        "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", "HTTP/1.1 200 OK\r\nA: b\n\r\n",
        "HTTP/1.1 200 O\x01K\r\n\r\n", "HTTP/1.1 200OK\r\nA: b\r\n\r\n",
        "HTTP/1.1 700 OK\r\nA: b\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\r\n"}) {
    INFO(head);
    Scan whole = scan(head);
    Scan split = scan(head, 1);
    CHECK(whole.result == split.result);
    CHECK(whole.consumed == split.consumed);
    CHECK(whole.error == split.error);
  }
  ResponseHeadScanner s;
  s.start(1024);
  std::size_t n = 0;
  std::string head = "HTTP/1.1 418 Teapot\r\nX: y\r\n\r\n";
  REQUIRE(s.scan(head.data(), head.size(), n) == ResponseHeadScanner::Result::done);
  CHECK(s.status() == 418);
  CHECK(s.bytes() == head.size());
  CHECK(n == head.size());
}
