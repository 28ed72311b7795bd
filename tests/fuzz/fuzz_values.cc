// The config value parsers (config/values.h): durations, sizes, rates and ratios. Every
// input is given to all four. Invariants: a failure always says why (and quotes the text); a
// success is in range, the text has the parser's shape, and the value re-serialised in the
// parser's own syntax parses back to the same value.
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "config/values.h"
#include "fuzz_check.h"

using namespace bulwark;

namespace {

bool digits_then(std::string_view text, std::string_view suffix_set_hint) {
  (void)suffix_set_hint;
  return !text.empty() && text[0] >= '0' && text[0] <= '9';
}

std::string fixed(double v) {
  char buf[512];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  FUZZ_CHECK(r.ec == std::errc(), "to_chars failed");
  return std::string(buf, r.ptr);
}

void check_duration(std::string_view text) {
  std::string error;
  auto v = parse_duration(text, error);
  if (!v) {
    FUZZ_CHECK(!error.empty(), "duration: no error for '%.*s'", (int)text.size(), text.data());
    return;
  }
  FUZZ_CHECK(error.empty(), "duration: error set on success");
  FUZZ_CHECK(*v <= kMaxDurationMs, "duration %llu above max", (unsigned long long)*v);
  FUZZ_CHECK(digits_then(text, "ms s m h"), "duration accepted without digits");
  // Re-serialised in milliseconds (and in the largest exact unit): the same value.
  std::string e2;
  auto ms = parse_duration(std::to_string(*v) + "ms", e2);
  FUZZ_CHECK(ms && *ms == *v, "duration %llu does not round-trip as ms", (unsigned long long)*v);
  std::string canon = *v == 0                  ? "0"
                      : *v % 3'600'000 == 0    ? std::to_string(*v / 3'600'000) + "h"
                      : *v % 60'000 == 0       ? std::to_string(*v / 60'000) + "m"
                      : *v % 1000 == 0         ? std::to_string(*v / 1000) + "s"
                                               : std::to_string(*v) + "ms";
  auto c = parse_duration(canon, e2);
  FUZZ_CHECK(c && *c == *v, "duration %llu does not round-trip as %s", (unsigned long long)*v,
             canon.c_str());
}

void check_size(std::string_view text) {
  std::string error;
  auto v = parse_size(text, error);
  if (!v) {
    FUZZ_CHECK(!error.empty(), "size: no error");
    return;
  }
  FUZZ_CHECK(error.empty(), "size: error set on success");
  FUZZ_CHECK(digits_then(text, ""), "size accepted without digits");
  std::string e2;
  auto b = parse_size(std::to_string(*v), e2);
  FUZZ_CHECK(b && *b == *v, "size %llu does not round-trip", (unsigned long long)*v);
  if (*v % (1ull << 30) == 0 && *v != 0) {
    auto g = parse_size(std::to_string(*v >> 30) + "GiB", e2);
    FUZZ_CHECK(g && *g == *v, "size %llu does not round-trip as GiB", (unsigned long long)*v);
  }
}

void check_rate(std::string_view text) {
  std::string error;
  auto v = parse_rate(text, error);
  if (!v) {
    FUZZ_CHECK(!error.empty(), "rate: no error");
    return;
  }
  FUZZ_CHECK(error.empty(), "rate: error set on success");
  FUZZ_CHECK(std::isfinite(*v), "rate not finite");
  FUZZ_CHECK(*v > 0, "rate '%.*s' accepted as %g per second (must be > 0)", (int)text.size(),
             text.data(), *v);
  std::string e2;
  std::string again = fixed(*v) + "/s";
  auto r = parse_rate(again, e2);
  FUZZ_CHECK(r && *r == *v, "rate %.17g does not round-trip as %s", *v, again.c_str());
}

void check_ratio(std::string_view text) {
  std::string error;
  auto v = parse_ratio(text, error);
  if (!v) {
    FUZZ_CHECK(!error.empty(), "ratio: no error");
    return;
  }
  FUZZ_CHECK(error.empty(), "ratio: error set on success");
  FUZZ_CHECK(*v >= 0 && *v <= 1, "ratio %g out of [0,1]", *v);
  FUZZ_CHECK(!text.empty() && text.back() == '%', "ratio accepted without %%");
  std::string e2;
  auto r = parse_ratio(fixed(*v * 100.0) + "%", e2);
  // *v * 100 may differ from the text's number in the last bit: compare with a tolerance.
  FUZZ_CHECK(r && std::fabs(*r - *v) <= 1e-15, "ratio %.17g does not round-trip", *v);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 256) return -1;  // values are short; longer inputs add nothing
  std::string_view text(reinterpret_cast<const char*>(data), size);
  check_duration(text);
  check_size(text);
  check_rate(text);
  check_ratio(text);
  return 0;
}
