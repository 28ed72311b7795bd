// Strict parsers for the value forms the config file uses. Each returns std::nullopt
// and fills `error` when the text is not exactly of its form.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bulwark {

// The longest duration a config may give (24h): every timer is now + duration, so an
// unbounded one could wrap; and no timeout or interval of a proxy needs more.
inline constexpr std::uint64_t kMaxDurationMs = 24ull * 3'600'000;

// "250ms", "5s", "1m", "1h", or "0", at most kMaxDurationMs. Result in milliseconds.
std::optional<std::uint64_t> parse_duration(std::string_view text, std::string& error);
// "512", "64KiB", "10MiB", "1GiB". Result in bytes.
std::optional<std::uint64_t> parse_size(std::string_view text, std::string& error);
// "100/s", "6000/m", "0.5/s", "10/h". Result in events per second.
std::optional<double> parse_rate(std::string_view text, std::string& error);
// "20%", "0.5%". Result as a fraction in [0, 1].
std::optional<double> parse_ratio(std::string_view text, std::string& error);

}  // namespace bulwark
