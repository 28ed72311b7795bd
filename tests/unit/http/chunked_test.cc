#include "http/chunked.h"

#include <doctest/doctest.h>

#include <string>

#include "http/headers.h"

using namespace bulwark;

namespace {

struct Decoded {
  std::string body;    // the chunk data, joined
  std::string events;  // "c5 e c3 e t(A:b) d"
  std::string rest;    // bytes after the body
  std::string error;   // empty unless the decoder failed
  std::size_t at = 0;  // bytes consumed before the error: where the offending byte is
  std::size_t data_events = 0;
  bool done = false;
};

// Decodes `input` fed in pieces of `step` bytes (0: all at once).
Decoded decode(std::string_view input, std::size_t step = 0,
               ChunkedDecoder::Limits limits = ChunkedDecoder::Limits()) {
  ChunkedDecoder d(limits);
  Decoded out;
  std::size_t offset = 0;
  while (offset < input.size() && !out.done && out.error.empty()) {
    std::size_t n = step ? std::min(step, input.size() - offset) : input.size() - offset;
    const char* p = input.data() + offset;
    const char* end = p + n;
    for (;;) {
      auto e = d.next(p, end);
      if (e == ChunkedDecoder::Event::need_more) break;
      if (e == ChunkedDecoder::Event::chunk_start)
        out.events += "c" + std::to_string(d.chunk_size()) + " ";
      if (e == ChunkedDecoder::Event::data) {
        out.body.append(d.data());
        ++out.data_events;
      }
      if (e == ChunkedDecoder::Event::chunk_end) out.events += "e ";
      if (e == ChunkedDecoder::Event::trailer)
        out.events +=
            "t(" + std::string(d.trailer_name()) + ":" + std::string(d.trailer_value()) + ") ";
      if (e == ChunkedDecoder::Event::done) {
        out.done = true;
        out.events += "d";
        out.rest.assign(p, static_cast<std::size_t>(input.data() + input.size() - p));
        break;
      }
      if (e == ChunkedDecoder::Event::error) {
        out.error = d.error();
        out.at = static_cast<std::size_t>(d.consumed());
        break;
      }
    }
    offset += n;
  }
  if (out.done) CHECK(d.consumed() == input.size() - out.rest.size());
  return out;
}

// The same result whether the input comes at once or byte by byte.
Decoded decode_both(std::string_view input) {
  Decoded whole = decode(input);
  Decoded bytes = decode(input, 1);
  CHECK(whole.body == bytes.body);
  CHECK(whole.events == bytes.events);
  CHECK(whole.error == bytes.error);
  CHECK(whole.done == bytes.done);
  return whole;
}

}  // namespace

TEST_CASE("chunked: well-formed bodies") {
  auto r = decode_both("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET /next");
  CHECK(r.done);
  CHECK(r.body == "hello world");
  CHECK(r.events == "c5 e c6 e d");
  CHECK(decode("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET /next").rest == "GET /next");
  CHECK(decode_both("0\r\n\r\n").events == "d");
  CHECK(decode_both("000\r\n\r\n").done);
  CHECK(decode_both("A\r\n0123456789\r\n0\r\n\r\n").body == "0123456789");
  CHECK(decode_both("a\r\n0123456789\r\n0\r\n\r\n").body == "0123456789");
  CHECK(decode_both("0005\r\nhello\r\n0\r\n\r\n").body == "hello");
}

TEST_CASE("chunked: extensions follow RFC 9112 7.1.1 and are ignored") {
  for (const char* ok :
       {"5;a=b;c=d\r\nhello\r\n0\r\n\r\n", "5 ;x\r\nhello\r\n0\r\n\r\n",
        "5;x\r\nhello\r\n0;last\r\n\r\n", "5 ; a = b ; c\r\nhello\r\n0\r\n\r\n",
        "5;a=\"q \\\" ;\"\r\nhello\r\n0\r\n\r\n", "5\t;\ta\r\nhello\r\n0\r\n\r\n"}) {
    CAPTURE(ok);
    auto r = decode_both(ok);
    CHECK(r.error == "");
    CHECK(r.done);
    CHECK(r.body == "hello");
  }
  for (const char* bad :
       {"5;\r\nhello\r\n0\r\n\r\n", "5;=b\r\nhello\r\n0\r\n\r\n", "5 \r\nhello\r\n0\r\n\r\n",
        "5;a \r\nhello\r\n0\r\n\r\n", "5;a=\r\nhello\r\n0\r\n\r\n", "5;a=\"x\r\nhello\r\n0\r\n\r\n",
        "5;a@b\r\nhello\r\n0\r\n\r\n", "5;a=b c\r\nhello\r\n0\r\n\r\n"}) {
    CAPTURE(bad);
    CHECK(decode_both(bad).error != "");
  }
}

TEST_CASE("chunked: exactly CRLF after chunk data, the size line and the trailer section") {
  // The smuggling case of the conformance issue: "AB" is followed by "\n3", not CRLF.
  auto r = decode_both(
      "2\r\nAB\n30\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nHost: x\r\nX: pppppp\r\n\r\n\r\n0\r\n\r\n");
  CHECK(r.error == "chunk data is not followed by CRLF");
  CHECK(decode_both("5\r\nhelloXX0\r\n\r\n").error == "chunk data is not followed by CRLF");
  CHECK(decode_both("5\r\nhello\n0\r\n\r\n").error == "chunk data is not followed by CRLF");
  CHECK(decode_both("5\r\nhello\r0\r\n\r\n").error == "chunk data is not followed by CRLF");
  CHECK(decode_both("5\nhello\r\n0\r\n\r\n").error == "invalid character in chunk size");
  CHECK(decode_both("5\rhello\r\n0\r\n\r\n").error == "a chunk-size line is not ended by CRLF");
  CHECK(decode_both("5\r\nhello\r\n0\r\n\rGGET /t2 HTTP/1.1\r\n\r\n").error ==
        "the last chunk is not ended by CRLF");
  CHECK(decode_both("5\r\nhello\r\n0\r\n\n").error != "");
  CHECK(decode_both("5\r\nhello\r\n0\n\r\n").error != "");
}

TEST_CASE("chunked: sizes") {
  CHECK(decode_both("ffffffffffffffff\r\n").error == "");  // the largest size parses (then waits)
  CHECK(decode_both("10000000000000000\r\n").error == "chunk size overflow");
  CHECK(decode_both("fffffffffffffffff0\r\nx").error == "chunk size overflow");
  CHECK(decode_both("-5\r\nhello\r\n0\r\n\r\n").error == "invalid chunk size");
  CHECK(decode_both("0x5\r\nhello\r\n0\r\n\r\n").error == "invalid character in chunk size");
  CHECK(decode_both("\r\nhello\r\n0\r\n\r\n").error == "invalid chunk size");
  CHECK(decode_both(" 5\r\nhello\r\n0\r\n\r\n").error == "invalid chunk size");
  ChunkedDecoder::Limits small;
  small.max_line = 16;
  CHECK(decode("5;aaaaaaaaaaaaaaaaaaaaaaaa\r\nhello\r\n0\r\n\r\n", 0, small).error ==
        "a chunk-size line is too long");
  CHECK(decode("5;aaaaaaa\r\nhello\r\n0\r\n\r\n", 0, small).done);
}

TEST_CASE("chunked: trailers are handed out one validated field at a time") {
  auto r = decode_both("5\r\nhello\r\n0\r\nA: b\r\nChecksum:  x y \t\r\nE:\r\n\r\nNEXT");
  CHECK(r.events == "c5 e t(A:b) t(Checksum:x y) t(E:) d");
  CHECK(decode_both("0\r\nA b: c\r\n\r\n").error == "invalid trailer field name");
  CHECK(decode_both("0\r\n: c\r\n\r\n").error == "invalid trailer field name");
  CHECK(decode_both("0\r\nA c\r\n\r\n").error == "a trailer line without a colon");
  CHECK(decode_both("0\r\nA: b\r\n c\r\n\r\n").error ==
        "obsolete line folding in the trailer section");
  CHECK(decode_both("0\r\nA: b\nC: d\r\n\r\n").error ==
        "a line of the trailer section is not ended by CRLF");
  CHECK(decode_both(std::string("0\r\nA: b\0c\r\n\r\n", 14)).error ==
        "invalid character in a trailer field value");
  CHECK(decode_both("0\r\nA: b\rC: d\r\n\r\n").error ==
        "a line of the trailer section is not ended by CRLF");
  ChunkedDecoder::Limits limits;
  limits.max_trailers = 2;
  limits.max_trailer_bytes = 32;
  auto many = decode("0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 0, limits);
  CHECK(many.error == "too many trailer fields");
  auto big = decode("0\r\nA: 0123456789012345678901234567890123456789\r\n\r\n", 1, limits);
  CHECK(big.error == "the trailer section is too large");
}

TEST_CASE("chunked: a body ends exactly after its last CRLF, however it is split") {
  for (std::string body :
       {std::string("5\r\nhello\r\n0\r\n\r\n"), std::string("000A\r\n0123456789\r\n0000\r\n\r\n"),
        std::string("5;a=b;c=d\r\nhello\r\n0\r\n\r\n"), std::string("5 ;x\r\nhello\r\n0\r\n\r\n"),
        std::string("5; a = \"q \\\" v\" ; b\r\nhello\r\n0;last\r\n\r\n"),
        std::string("5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-B: 1\r\n\r\n")}) {
    for (std::size_t step : {0, 1, 2, 5}) {
      CAPTURE(body);
      CAPTURE(step);
      auto r = decode(body + "NEXT", step);
      CHECK(r.error == "");
      CHECK(r.done);
      CHECK(r.rest == "NEXT");
    }
  }
  auto partial = decode_both("5\r\nhel");
  CHECK_FALSE(partial.done);
  CHECK(partial.error == "");
  CHECK(partial.body == "hel");
}

TEST_CASE("chunked: a malformed body is refused at the offending byte") {
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
        Bad{"5\rXhello\r\n0\r\n\r\n", 2, "a chunk-size line is not ended by CRLF"},
        Bad{"5\nhello\r\n0\r\n\r\n", 1, "invalid character in chunk size"},
        Bad{"\r\nhello", 0, "invalid chunk size"}, Bad{"x\r\n", 0, "invalid chunk size"},
        Bad{"-5\r\n", 0, "invalid chunk size"},
        Bad{"fffffffffffffffff\r\n", 16, "chunk size overflow"},
        Bad{"5;\r\nhello", 2, "invalid chunk extension name"},
        Bad{"5;a=\r\nhello", 4, "invalid chunk extension value"},
        Bad{"5;a=\"x\r\n\"\r\nhello", 6, "invalid chunk extension value"},
        Bad{"5 x\r\nhello", 2, "invalid chunk extension"},
        Bad{"0\r\nX-T: v\n\r\n", 9, "a line of the trailer section is not ended by CRLF"},
        Bad{"0\r\nX-T: v\r\n\n", 11, "the last chunk is not ended by CRLF"},
        Bad{"0\r\nX-T: v\rX\r\n\r\n", 10, "a line of the trailer section is not ended by CRLF"}}) {
    for (std::size_t step : {0, 1}) {
      CAPTURE(b.body);
      CAPTURE(step);
      auto r = decode(b.body, step);
      CHECK(r.error == b.error);
      CHECK(r.at == b.at);
    }
  }
}

TEST_CASE("chunked: a chunk-size line and the trailer section are bounded, with their kind") {
  // A size line's bytes include its CRLF: "5;", 100 extension bytes, CRLF.
  ChunkedDecoder::Limits limits;
  limits.max_line = 104;
  CHECK(decode("5;" + std::string(100, 'a') + "\r\nhello\r\n0\r\n\r\n", 0, limits).done);
  limits.max_line = 103;
  ChunkedDecoder d(limits);
  std::string line = "5;" + std::string(100, 'a') + "\r\n";
  const char* p = line.data();
  CHECK(d.next(p, line.data() + line.size()) == ChunkedDecoder::Event::error);
  CHECK(d.error_kind() == ChunkedDecoder::ErrorKind::line_too_long);
  // The limit is per line: many small chunks are fine.
  std::string many;
  for (int i = 0; i < 100; ++i) many += "1\r\nx\r\n";
  limits.max_line = 5;
  CHECK(decode(many + "0\r\n\r\n", 0, limits).done);

  // The trailer section's bytes: its lines without their CRLFs are checked as they come
  // (53 here), each CRLF counts towards the lines after it.
  std::string trailer = "0\r\nX: " + std::string(50, 'v') + "\r\n\r\n";
  limits.max_trailer_bytes = 53;
  CHECK(decode(trailer, 0, limits).done);
  CHECK(decode("0\r\nA: 1\r\nB: 23\r\n\r\n", 0, limits).done);  // 4 + 2 + 5
  limits.max_trailer_bytes = 10;
  CHECK(decode("0\r\nA: 1\r\nB: 23\r\n\r\n", 0, limits).error ==
        "the trailer section is too large");
  limits.max_trailer_bytes = 52;
  ChunkedDecoder t(limits);
  p = trailer.data();
  ChunkedDecoder::Event e = t.next(p, trailer.data() + trailer.size());
  CHECK(e == ChunkedDecoder::Event::error);
  CHECK(t.error_kind() == ChunkedDecoder::ErrorKind::trailers_too_large);
}

TEST_CASE("chunked: chunk data is handed out in one piece per input, not byte by byte") {
  std::string body = "100000\r\n" + std::string(1 << 20, 'z') + "\r\n0\r\n\r\n";
  auto r = decode(body, 65536);
  CHECK(r.done);
  CHECK(r.body.size() == (1u << 20));
  CHECK(r.data_events == 17);  // the first input also holds the size line
}

TEST_CASE("chunked: the decoder stays in error and can be reset") {
  ChunkedDecoder d;
  std::string_view bad = "zz\r\n";
  const char* p = bad.data();
  CHECK(d.next(p, bad.data() + bad.size()) == ChunkedDecoder::Event::error);
  CHECK(d.next(p, bad.data() + bad.size()) == ChunkedDecoder::Event::error);
  d.reset();
  std::string_view good = "0\r\n\r\n";
  p = good.data();
  CHECK(d.next(p, good.data() + good.size()) == ChunkedDecoder::Event::done);
  CHECK(d.finished());
}

TEST_CASE("token characters") {
  CHECK(is_token("Content-Type"));
  CHECK(is_token("x!#$%&'*+-.^_`|~9"));
  CHECK_FALSE(is_token(""));
  CHECK_FALSE(is_token("Transfer Encoding"));
  CHECK_FALSE(is_token("a:b"));
  CHECK_FALSE(is_token("a\"b"));
  CHECK_FALSE(is_token("\x80"));
}
