// JSON access log, one line per request. Each worker fills its own buffer and hands it, once
// per loop iteration (or when it grows large), to the process's AccessLogSink: a writer
// thread that owns the log's file descriptor. A slow or stuck reader (a pipe nobody drains)
// therefore never blocks an event loop; past a bounded backlog whole batches of lines are
// dropped and counted (bulwark_access_log_dropped_total). One writer means lines are never
// interleaved, whatever their length or the number of workers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

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
  // Lines waiting for the writer thread beyond this are dropped (and counted).
  static constexpr std::size_t kMaxBacklogBytes = 4 * 1024 * 1024;
  // How long shutdown waits for the backlog to be written before giving up on it.
  static constexpr int kCloseGraceMs = 1000;

  // path: stdout | stderr | off | a file (appended). Returns nullptr with `error` on failure.
  static std::unique_ptr<AccessLogSink> open(const std::string& path, std::string& error);
  // Writes what is queued (for at most kCloseGraceMs) and stops the writer thread.
  ~AccessLogSink();
  AccessLogSink(const AccessLogSink&) = delete;
  AccessLogSink& operator=(const AccessLogSink&) = delete;

  bool enabled() const { return enabled_; }
  // Queues `batch` (`lines` whole lines) for writing and clears it; never waits for the log.
  // Returns false when the backlog is full and the batch was dropped.
  bool submit(std::string& batch, std::uint64_t lines) const;
  // Reopens a file log by its path (SIGUSR1, after logrotate renamed it). Returns false for
  // stdout, stderr and off, which have nothing to reopen.
  bool reopen() const;
  // Lines dropped because the backlog was full (or could not be written at shutdown).
  std::uint64_t dropped_lines() const;

  struct Shared;  // state shared with the writer thread, which may outlive the sink

 private:
  AccessLogSink() = default;
  bool enabled_ = false;
  std::shared_ptr<Shared> shared_;
  std::thread writer_;
};

class AccessLog {
 public:
  explicit AccessLog(const AccessLogSink& sink) : sink_(sink) {}
  bool enabled() const { return sink_.enabled(); }
  void record(const AccessEntry& entry);
  // Hands the buffered lines to the sink.
  void flush();

 private:
  const AccessLogSink& sink_;
  std::string buffer_;
  std::uint64_t lines_ = 0;
};

}  // namespace bulwark
