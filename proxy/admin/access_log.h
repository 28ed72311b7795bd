// JSON access log, one line per request. Each worker fills its own buffer and writes it
// out once per loop iteration (or when it grows large), so logging costs no lock and at
// most one write(2) per iteration.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace bulwark {

struct AccessEntry {
  std::string_view request_id;
  std::string_view client;
  std::string_view method;
  std::string_view path;
  std::string_view listener;
  std::string_view route;
  std::string_view upstream;
  std::string_view endpoint;
  std::string_view reason;
  int status = 0;
  int attempts = 0;
  std::uint64_t duration_ns = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
};

class AccessLogSink {
 public:
  // path: stdout | stderr | off | a file (appended). Returns nullptr with `error` on failure.
  static std::unique_ptr<AccessLogSink> open(const std::string& path, std::string& error);
  ~AccessLogSink();
  bool enabled() const { return fd_ >= 0; }
  void write(const std::string& data) const;

 private:
  int fd_ = -1;
  bool owned_ = false;
};

class AccessLog {
 public:
  explicit AccessLog(const AccessLogSink& sink) : sink_(sink) {}
  bool enabled() const { return sink_.enabled(); }
  void record(const AccessEntry& entry);
  void flush();

 private:
  const AccessLogSink& sink_;
  std::string buffer_;
};

}  // namespace bulwark
