#include "config/values.h"

#include <charconv>
#include <cmath>
#include <limits>

namespace bulwark {
namespace {

// Splits leading digits from the suffix; the number must be a plain unsigned integer.
bool leading_integer(std::string_view text, std::uint64_t& value, std::string_view& suffix) {
  std::size_t i = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
  if (i == 0) return false;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + i, value);
  if (ec != std::errc() || ptr != text.data() + i) return false;
  suffix = text.substr(i);
  return true;
}

// A non-negative decimal: digits with at most one '.', digits on both sides of it.
bool leading_decimal(std::string_view text, double& value, std::string_view& suffix) {
  std::size_t i = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
  if (i == 0) return false;
  if (i < text.size() && text[i] == '.') {
    std::size_t frac = ++i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    if (i == frac) return false;
  }
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + i, value);
  if (ec != std::errc() || ptr != text.data() + i || !std::isfinite(value)) return false;
  suffix = text.substr(i);
  return true;
}

bool checked_multiply(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}

}  // namespace

std::optional<std::uint64_t> parse_duration(std::string_view text, std::string& error) {
  std::uint64_t value = 0;
  std::string_view unit;
  if (!leading_integer(text, value, unit)) {
    error = "invalid duration '" + std::string(text) + "' (expected e.g. 250ms, 5s, 1m, 1h)";
    return std::nullopt;
  }
  std::uint64_t scale = 0;
  if (unit == "ms")
    scale = 1;
  else if (unit == "s")
    scale = 1000;
  else if (unit == "m")
    scale = 60'000;
  else if (unit == "h")
    scale = 3'600'000;
  else if (unit.empty() && value == 0)
    scale = 1;
  if (scale == 0) {
    error = "invalid duration '" + std::string(text) + "' (unit must be ms, s, m or h)";
    return std::nullopt;
  }
  std::uint64_t out = 0;
  if (!checked_multiply(value, scale, out) || out > kMaxDurationMs) {
    error = "duration '" + std::string(text) + "' is above the maximum of 24h";
    return std::nullopt;
  }
  return out;
}

std::optional<std::uint64_t> parse_size(std::string_view text, std::string& error) {
  std::uint64_t value = 0;
  std::string_view unit;
  if (!leading_integer(text, value, unit)) {
    error = "invalid size '" + std::string(text) + "' (expected e.g. 512, 64KiB, 10MiB)";
    return std::nullopt;
  }
  std::uint64_t scale = 0;
  if (unit.empty())
    scale = 1;
  else if (unit == "KiB")
    scale = 1ull << 10;
  else if (unit == "MiB")
    scale = 1ull << 20;
  else if (unit == "GiB")
    scale = 1ull << 30;
  if (scale == 0) {
    error = "invalid size '" + std::string(text) + "' (unit must be KiB, MiB or GiB)";
    return std::nullopt;
  }
  std::uint64_t out = 0;
  if (!checked_multiply(value, scale, out)) {
    error = "size '" + std::string(text) + "' is too large";
    return std::nullopt;
  }
  return out;
}

std::optional<double> parse_rate(std::string_view text, std::string& error) {
  double value = 0;
  std::string_view unit;
  if (!leading_decimal(text, value, unit)) {
    error = "invalid rate '" + std::string(text) + "' (expected e.g. 100/s, 6000/m)";
    return std::nullopt;
  }
  double per = 0;
  if (unit == "/s")
    per = 1;
  else if (unit == "/m")
    per = 60;
  else if (unit == "/h")
    per = 3600;
  if (per == 0) {
    error = "invalid rate '" + std::string(text) + "' (unit must be /s, /m or /h)";
    return std::nullopt;
  }
  if (value <= 0) {
    error = "rate '" + std::string(text) + "' must be greater than zero";
    return std::nullopt;
  }
  return value / per;
}

std::optional<double> parse_ratio(std::string_view text, std::string& error) {
  double value = 0;
  std::string_view unit;
  if (!leading_decimal(text, value, unit) || unit != "%") {
    error = "invalid ratio '" + std::string(text) + "' (expected a percentage, e.g. 20%)";
    return std::nullopt;
  }
  if (value > 100) {
    error = "ratio '" + std::string(text) + "' is above 100%";
    return std::nullopt;
  }
  return value / 100.0;
}

}  // namespace bulwark
