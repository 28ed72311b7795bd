#include "core/log.h"

#include <sys/time.h>
#include <unistd.h>

#include <atomic>
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
