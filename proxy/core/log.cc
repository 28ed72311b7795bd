#include "core/log.h"

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace bulwark {

static std::atomic<int> g_level{static_cast<int>(LogLevel::info)};

void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }

void format_utc_now(char* buf) {
  timeval tv{};
  gettimeofday(&tv, nullptr);
  tm t{};
  gmtime_r(&tv.tv_sec, &t);
  std::size_t n = std::strftime(buf, 40, "%Y-%m-%dT%H:%M:%S", &t);
  std::snprintf(buf + n, 40 - n, ".%03dZ", static_cast<int>(tv.tv_usec / 1000) % 1000);
}

void log(LogLevel level, const std::string& message) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return;
  static const char* const names[] = {"debug", "info", "warn", "error"};
  char now[40];
  format_utc_now(now);
  std::string line;
  line.reserve(message.size() + 48);
  line.append(now).append(" ").append(names[static_cast<int>(level)]).append(" ").append(message);
  line.push_back('\n');
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace bulwark

namespace bulwark {

void LogThrottle::log(LogLevel level, const std::string& message) {
  auto now = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::steady_clock::now().time_since_epoch())
                                            .count());
  std::uint64_t next = next_ms_.load(std::memory_order_relaxed);
  if (now < next || !next_ms_.compare_exchange_strong(next, now + interval_ms_)) {
    suppressed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  std::uint64_t suppressed = suppressed_.exchange(0, std::memory_order_relaxed);
  if (suppressed == 0) {
    bulwark::log(level, message);
  } else {
    bulwark::log(level,
                 message + " (" + std::to_string(suppressed) + " more since the last such line)");
  }
}

}  // namespace bulwark
