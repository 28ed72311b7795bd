#include "config/values.h"

#include <doctest/doctest.h>

using namespace bulwark;

TEST_CASE("durations") {
  std::string e;
  CHECK(*parse_duration("250ms", e) == 250);
  CHECK(*parse_duration("5s", e) == 5000);
  CHECK(*parse_duration("1m", e) == 60000);
  CHECK(*parse_duration("1h", e) == 3600000);
  CHECK(*parse_duration("0", e) == 0);
  for (const char* bad :
       {"", "5", "5 s", "s", "-1s", "1.5s", "5sec", "10d", "99999999999999999999ms"}) {
    CAPTURE(bad);
    e.clear();
    CHECK_FALSE(parse_duration(bad, e));
    CHECK_FALSE(e.empty());
  }
}

TEST_CASE("durations have a documented upper bound of 24h") {
  // Regression: a huge duration (e.g. 5124095576h, near 2^64 ms) was accepted and wrapped
  // now + timeout into the past.
  std::string e;
  CHECK(*parse_duration("24h", e) == 86'400'000);
  CHECK(*parse_duration("1440m", e) == 86'400'000);
  CHECK(*parse_duration("86400000ms", e) == kMaxDurationMs);
  for (const char* big : {"25h", "86400001ms", "1441m", "5124095576h", "18446744073709551s"}) {
    CAPTURE(big);
    e.clear();
    CHECK_FALSE(parse_duration(big, e));
    CHECK(e.find("maximum of 24h") != std::string::npos);
  }
}

TEST_CASE("sizes") {
  std::string e;
  CHECK(*parse_size("512", e) == 512);
  CHECK(*parse_size("64KiB", e) == 65536);
  CHECK(*parse_size("10MiB", e) == 10u * 1024 * 1024);
  CHECK(*parse_size("1GiB", e) == 1ull << 30);
  for (const char* bad : {"", "64kb", "64 KiB", "KiB", "1.5MiB", "-1", "64K"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_size(bad, e));
  }
}

TEST_CASE("rates") {
  std::string e;
  CHECK(*parse_rate("100/s", e) == doctest::Approx(100));
  CHECK(*parse_rate("6000/m", e) == doctest::Approx(100));
  CHECK(*parse_rate("0.5/s", e) == doctest::Approx(0.5));
  CHECK(*parse_rate("36/h", e) == doctest::Approx(0.01));
  for (const char* bad : {"", "100", "100/d", "/s", "0/s", "1./s", "abc/s", "100 /s"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_rate(bad, e));
  }
}

TEST_CASE("ratios") {
  std::string e;
  CHECK(*parse_ratio("20%", e) == doctest::Approx(0.2));
  CHECK(*parse_ratio("0.5%", e) == doctest::Approx(0.005));
  CHECK(*parse_ratio("100%", e) == doctest::Approx(1.0));
  CHECK(*parse_ratio("0%", e) == doctest::Approx(0.0));
  for (const char* bad : {"", "20", "0.2", "101%", "-5%", "%"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_ratio(bad, e));
  }
}
