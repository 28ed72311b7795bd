// Process log: one line per event on stderr, with time and level. Thread-safe (one write(2)
// per line). Access logs are separate (admin/access_log.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace bulwark {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3 };

void set_log_level(LogLevel level);
void log(LogLevel level, const std::string& message);
inline void log_info(const std::string& m) { log(LogLevel::info, m); }
inline void log_warn(const std::string& m) { log(LogLevel::warn, m); }
inline void log_error(const std::string& m) { log(LogLevel::error, m); }

// For a condition that can repeat thousands of times a second (out of file descriptors):
// logs at most one line per interval, saying how many were suppressed since the last one.
// Thread-safe; one instance per kind of event.
class LogThrottle {
 public:
  explicit LogThrottle(std::uint64_t interval_ms = 1000) : interval_ms_(interval_ms) {}
  void log(LogLevel level, const std::string& message);

 private:
  const std::uint64_t interval_ms_;
  std::atomic<std::uint64_t> next_ms_{0};
  std::atomic<std::uint64_t> suppressed_{0};
};

// RFC 3339 UTC time with milliseconds, e.g. 2026-11-22T17:40:03.123Z, written into buf[40].
void format_utc_now(char* buf);

}  // namespace bulwark
