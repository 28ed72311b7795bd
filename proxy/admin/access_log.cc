#include "admin/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/json.h"
#include "core/log.h"

namespace bulwark {

std::unique_ptr<AccessLogSink> AccessLogSink::open(const std::string& path, std::string& error) {
  auto sink = std::unique_ptr<AccessLogSink>(new AccessLogSink());
  if (path == "off") return sink;
  if (path == "stdout") {
    sink->fd_ = STDOUT_FILENO;
  } else if (path == "stderr") {
    sink->fd_ = STDERR_FILENO;
  } else {
    sink->fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (sink->fd_ < 0) {
      error = "access_log.path: cannot open " + path + ": " + std::strerror(errno);
      return nullptr;
    }
    sink->owned_ = true;
  }
  return sink;
}

AccessLogSink::~AccessLogSink() {
  if (owned_) ::close(fd_);
}

void AccessLogSink::write(const std::string& data) const {
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd_, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a full or closed log must never stop the proxy
    done += static_cast<std::size_t>(n);
  }
}

void AccessLog::record(const AccessEntry& e) {
  if (!sink_.enabled()) return;
  char now[40];
  format_utc_now(now);
  std::string& b = buffer_;
  b.append("{\"time\":\"").append(now).append("\",\"request_id\":");
  append_json_string(b, e.request_id);
  b.append(",\"client\":");
  append_json_string(b, e.client);
  b.append(",\"method\":");
  append_json_string(b, e.method);
  b.append(",\"path\":");
  append_json_string(b, e.path);
  b.append(",\"listener\":");
  append_json_string(b, e.listener);
  b.append(",\"route\":");
  append_json_string(b, e.route);
  b.append(",\"status\":").append(std::to_string(e.status));
  b.append(",\"reason\":");
  append_json_string(b, e.reason);
  b.append(",\"upstream\":");
  append_json_string(b, e.upstream);
  b.append(",\"endpoint\":");
  append_json_string(b, e.endpoint);
  b.append(",\"attempts\":").append(std::to_string(e.attempts));
  char duration[32];
  std::snprintf(duration, sizeof duration, "%.6f", static_cast<double>(e.duration_ns) / 1e9);
  b.append(",\"duration\":").append(duration);
  b.append(",\"bytes_in\":").append(std::to_string(e.bytes_in));
  b.append(",\"bytes_out\":").append(std::to_string(e.bytes_out));
  b.append("}\n");
  if (b.size() > 64 * 1024) flush();
}

void AccessLog::flush() {
  if (buffer_.empty()) return;
  sink_.write(buffer_);
  buffer_.clear();
}

}  // namespace bulwark
