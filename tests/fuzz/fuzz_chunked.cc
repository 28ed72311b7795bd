// The chunked transfer-coding decoder (http/chunked.h) that reads request bodies and upstream
// response bodies. The first two input bytes choose how the rest is split into reads; the
// rest is the body. Invariants: the data reported never exceeds the input, each chunk's data
// adds up to its announced size, consumed() matches the bytes taken, `done` leaves the
// pointer inside the input, an error stays an error, and the outcome (data, trailers,
// done/error and its reason, where the body ends) is the same whether the body comes in one
// read or in pieces.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "http/chunked.h"

using namespace bulwark;

namespace {

struct Outcome {
  std::string data;
  std::vector<std::string> trailers;
  bool done = false;
  bool error = false;
  std::string error_text;
  std::uint64_t consumed = 0;
  std::uint64_t chunks = 0;
};

Outcome decode(const std::string& body, std::size_t piece_a, std::size_t piece_b) {
  ChunkedDecoder::Limits limits;
  limits.max_line = 64;
  limits.max_trailer_bytes = 256;
  limits.max_trailers = 4;
  ChunkedDecoder d(limits);
  Outcome o;
  std::uint64_t in_chunk = 0, announced = 0;
  bool chunk_open = false;
  std::size_t offset = 0;
  bool flip = false;
  while (offset < body.size() || body.empty()) {
    std::size_t piece = flip ? piece_b : piece_a;
    flip = !flip;
    std::size_t len = std::min(piece, body.size() - offset);
    const char* begin = body.data() + offset;
    const char* p = begin;
    const char* end = begin + len;
    for (;;) {
      const char* before = p;
      std::uint64_t consumed_before = d.consumed();
      ChunkedDecoder::Event e = d.next(p, end);
      FUZZ_CHECK(p >= before && p <= end, "pointer moved outside the input");
      FUZZ_CHECK(d.consumed() - consumed_before == static_cast<std::uint64_t>(p - before),
                 "consumed() disagrees with the bytes taken");
      if (e == ChunkedDecoder::Event::need_more) {
        FUZZ_CHECK(p == end, "need_more with input left");
        break;
      }
      if (e == ChunkedDecoder::Event::chunk_start) {
        FUZZ_CHECK(!chunk_open && d.chunk_size() > 0, "bad chunk_start");
        chunk_open = true;
        announced = d.chunk_size();
        in_chunk = 0;
        ++o.chunks;
      } else if (e == ChunkedDecoder::Event::data) {
        FUZZ_CHECK(chunk_open, "data outside a chunk");
        std::string_view v = d.data();
        FUZZ_CHECK(!v.empty(), "empty data event");
        FUZZ_CHECK(v.data() >= begin && v.data() + v.size() <= end, "data not in the input");
        in_chunk += v.size();
        FUZZ_CHECK(in_chunk <= announced, "more data than the chunk size");
        o.data.append(v);
      } else if (e == ChunkedDecoder::Event::chunk_end) {
        FUZZ_CHECK(chunk_open && in_chunk == announced, "chunk ended short");
        chunk_open = false;
      } else if (e == ChunkedDecoder::Event::trailer) {
        FUZZ_CHECK(!d.trailer_name().empty(), "empty trailer name");
        o.trailers.push_back(std::string(d.trailer_name()) + ":" + std::string(d.trailer_value()));
        FUZZ_CHECK(o.trailers.size() <= limits.max_trailers, "too many trailers");
      } else if (e == ChunkedDecoder::Event::done) {
        FUZZ_CHECK(!chunk_open && d.finished(), "done inside a chunk");
        o.done = true;
        o.consumed = offset + static_cast<std::size_t>(p - begin);
        FUZZ_CHECK(o.consumed == d.consumed(), "done: consumed mismatch");
        return o;
      } else if (e == ChunkedDecoder::Event::error) {
        FUZZ_CHECK(d.error() && *d.error(), "error without a reason");
        // Sticky.
        const char* q = p;
        FUZZ_CHECK(d.next(q, end) == ChunkedDecoder::Event::error, "error not sticky");
        o.error = true;
        o.error_text = d.error();
        o.consumed = d.consumed();
        return o;
      }
    }
    offset += len;
    if (body.empty()) break;
  }
  o.consumed = d.consumed();
  FUZZ_CHECK(o.consumed == body.size(), "need_more but not everything consumed");
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2 || size > 8192) return -1;
  std::size_t a = data[0] % 17 + 1, b = data[1] % 5 + 1;
  std::string body(reinterpret_cast<const char*>(data) + 2, size - 2);
  Outcome whole = decode(body, body.size() + 1, body.size() + 1);
  FUZZ_CHECK(whole.data.size() <= body.size(), "more body than input");
  Outcome split = decode(body, a, b);
  FUZZ_CHECK(split.done == whole.done && split.error == whole.error,
             "outcome depends on how the input is split (pieces %zu/%zu)", a, b);
  FUZZ_CHECK(split.data == whole.data, "data depends on the split");
  FUZZ_CHECK(split.trailers == whole.trailers, "trailers depend on the split");
  // Where an error stops may depend on the split (a limit is seen as soon as the whole line is
  // there, or once the bytes arrive: both refuse, neither keeps more than the limit); where a
  // body ends may not.
  FUZZ_CHECK(whole.error || split.consumed == whole.consumed, "consumed depends on the split");
  FUZZ_CHECK(whole.consumed <= body.size() && split.consumed <= body.size(), "consumed > input");
  FUZZ_CHECK(split.error_text == whole.error_text, "error depends on the split: %s / %s",
             split.error_text.c_str(), whole.error_text.c_str());
  return 0;
}
