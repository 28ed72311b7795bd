#include "http/chunk_check.h"

#include <doctest/doctest.h>

#include <string>

using namespace bulwark;

namespace {

struct Check {
  ChunkedBodyChecker::Result result;
  std::size_t consumed;  // over all pieces
  std::string error;
};

// Checks `body` in pieces of `piece` bytes (0: all at once), as reads would deliver it.
Check check(const std::string& body, std::size_t piece = 0, std::uint64_t limit = 1024) {
  ChunkedBodyChecker c;
  c.start(limit);
  Check out{ChunkedBodyChecker::Result::more, 0, ""};
  std::size_t step = piece ? piece : body.size();
  for (std::size_t at = 0; at < body.size(); at += step) {
    std::size_t n = 0;
    out.result = c.scan(body.data() + at, std::min(step, body.size() - at), n);
    out.consumed += n;
    if (out.result != ChunkedBodyChecker::Result::more) break;
  }
  out.error = c.error();
  return out;
}

}  // namespace

TEST_CASE("valid chunked bodies end exactly after their last CRLF") {
  for (std::string body :
       {std::string("5\r\nhello\r\n0\r\n\r\n"), std::string("000A\r\n0123456789\r\n0000\r\n\r\n"),
        std::string("5;a=b;c=d\r\nhello\r\n0\r\n\r\n"), std::string("5 ;x\r\nhello\r\n0\r\n\r\n"),
        std::string("5; a = \"q \\\" v\" ; b\r\nhello\r\n0;last\r\n\r\n"),
        std::string("5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-B: 1\r\n\r\n")}) {
    for (std::size_t piece : {0, 1, 2, 5}) {
      INFO(body, piece);
      Check r = check(body + "NEXT", piece);
      CHECK(r.result == ChunkedBodyChecker::Result::done);
      CHECK(r.consumed == body.size());
    }
  }
  CHECK(check("5\r\nhel").result == ChunkedBodyChecker::Result::more);
}

TEST_CASE("malformed chunked bodies are refused at the offending byte") {
  struct Bad {
    std::string body;
    std::size_t at;
    const char* error;
  };
  for (const Bad& b :
       {Bad{"5\r\nhelloXX0\r\n\r\n", 8, "chunk data is not followed by CRLF"},
        Bad{"5\r\nhello\n0\r\n\r\n", 8, "chunk data is not followed by CRLF"},
        Bad{"5\r\nhello\rX0\r\n\r\n", 9, "chunk data is not followed by CRLF"},
        Bad{"2\r\nAB\n30\r\n\r\n", 5, "chunk data is not followed by CRLF"},
        Bad{"5\r\nhello\r\n0\r\n\rX", 14, "the last chunk is not ended by CRLF"},
        Bad{"5\rXhello\r\n0\r\n\r\n", 2, "chunk-size line is not ended by CRLF"},
        Bad{"5\nhello\r\n0\r\n\r\n", 1, "invalid chunk size line"},
        Bad{"\r\nhello", 0, "invalid chunk size line"}, Bad{"x\r\n", 0, "invalid chunk size line"},
        Bad{"-5\r\n", 0, "invalid chunk size line"},
        Bad{"fffffffffffffffff\r\n", 16, "chunk size overflow"},
        Bad{"5;\r\nhello", 2, "invalid chunk extension"},
        Bad{"5;a=\r\nhello", 4, "invalid chunk extension"},
        Bad{"5;a=\"x\r\n\"\r\nhello", 6, "invalid chunk extension"},
        Bad{"5 x\r\nhello", 2, "invalid chunk extension"},
        Bad{"0\r\nX-T: v\n\r\n", 9, "trailer section"},
        Bad{"0\r\nX-T: v\r\n\n", 11, "trailer section"},
        Bad{"0\r\nX-T: v\rX\r\n\r\n", 10, "trailer section"}}) {
    for (std::size_t piece : {0, 1}) {
      INFO(b.body, piece);
      Check r = check(b.body, piece);
      CHECK(r.result == ChunkedBodyChecker::Result::error);
      CHECK(r.consumed == b.at);
      CHECK(r.error.find(b.error) != std::string::npos);
    }
  }
}

TEST_CASE("a chunk-size line and the trailer section are bounded") {
  // The line's bytes up to its CR: "5;", 100 extension bytes, CR.
  CHECK(check("5;" + std::string(100, 'a') + "\r\nhello\r\n0\r\n\r\n", 0, 103).result ==
        ChunkedBodyChecker::Result::done);
  Check r = check("5;" + std::string(200, 'a') + "\r\n", 0, 102);
  CHECK(r.result == ChunkedBodyChecker::Result::error);
  CHECK(r.error.find("chunk-size line exceeds") != std::string::npos);
  // The limit is per line: many small chunks are fine.
  std::string many;
  for (int i = 0; i < 100; ++i) many += "1\r\nx\r\n";
  CHECK(check(many + "0\r\n\r\n", 0, 16).result == ChunkedBodyChecker::Result::done);

  std::string trailer = "X: " + std::string(50, 'v') + "\r\n";  // 55 bytes, + final CRLF: 57
  CHECK(check("0\r\n" + trailer + "\r\n", 0, 57).result == ChunkedBodyChecker::Result::done);
  r = check("0\r\n" + trailer + "\r\n", 0, 56);
  CHECK(r.result == ChunkedBodyChecker::Result::error);
  CHECK(r.error.find("trailer section exceeds") != std::string::npos);
}

TEST_CASE("large chunks are skipped, not scanned byte by byte") {
  std::string data(1 << 20, 'z');
  std::string body = "100000\r\n" + data + "\r\n0\r\n\r\n";
  Check r = check(body, 65536);
  CHECK(r.result == ChunkedBodyChecker::Result::done);
  CHECK(r.consumed == body.size());
}
