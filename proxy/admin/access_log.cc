#include "admin/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include "core/json.h"
#include "core/log.h"

namespace bulwark {

struct AccessLogSink::Shared {
  std::string path;  // empty: stdout or stderr, not reopened
  int fd = -1;
  bool owned = false;
  std::mutex mutex;
  std::condition_variable wake;      // the writer: work to do
  std::condition_variable finished;  // the sink: the writer has stopped
  std::string backlog;
  std::uint64_t backlog_lines = 0;
  bool reopen = false;
  bool stop = false;
  bool done = false;
  std::atomic<std::uint64_t> dropped{0};

  ~Shared() {
    if (owned && fd >= 0) ::close(fd);
  }

  // Blocking writes are fine here: this thread is the only one that waits for the reader.
  void write_all(const std::string& data) {
    std::size_t at = 0;
    while (at < data.size()) {
      ssize_t n = ::write(fd, data.data() + at, data.size() - at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {  // a closed or broken log: what is left of the batch is lost
        dropped.fetch_add(static_cast<std::uint64_t>(std::count(
                              data.begin() + static_cast<std::ptrdiff_t>(at), data.end(), '\n')),
                          std::memory_order_relaxed);
        return;
      }
      at += static_cast<std::size_t>(n);
    }
  }

  void reopen_file() {
    int next = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (next < 0) {
      log_error("access log: cannot reopen " + path + ": " + std::strerror(errno) +
                "; still writing to the previous file");
      return;
    }
    ::close(fd);
    fd = next;
    log_info("access log reopened: " + path);
  }

  void run() {
    std::string writing;
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      wake.wait(lock, [this] { return stop || reopen || !backlog.empty(); });
      if (reopen) {
        reopen = false;
        lock.unlock();
        reopen_file();
        lock.lock();
        continue;
      }
      if (!backlog.empty()) {
        writing.swap(backlog);
        backlog_lines = 0;
        lock.unlock();
        write_all(writing);
        writing.clear();
        lock.lock();
        continue;
      }
      if (stop) break;
    }
    done = true;
    finished.notify_all();
  }
};

std::unique_ptr<AccessLogSink> AccessLogSink::open(const std::string& path, std::string& error) {
  auto sink = std::unique_ptr<AccessLogSink>(new AccessLogSink());
  if (path == "off") return sink;
  auto shared = std::make_shared<Shared>();
  if (path == "stdout") {
    shared->fd = STDOUT_FILENO;
  } else if (path == "stderr") {
    shared->fd = STDERR_FILENO;
  } else {
    shared->fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (shared->fd < 0) {
      error = "access_log.path: cannot open " + path + ": " + std::strerror(errno);
      return nullptr;
    }
    shared->owned = true;
    shared->path = path;
  }
  sink->enabled_ = true;
  sink->shared_ = shared;
  // The thread holds its own reference: if shutdown gives up on a stuck log, the thread is
  // left behind (blocked in write) with the state it uses still alive.
  sink->writer_ = std::thread([shared] { shared->run(); });
  return sink;
}

AccessLogSink::~AccessLogSink() {
  if (!shared_) return;
  std::unique_lock<std::mutex> lock(shared_->mutex);
  shared_->stop = true;
  shared_->wake.notify_one();
  bool done = shared_->finished.wait_for(lock, std::chrono::milliseconds(kCloseGraceMs),
                                         [this] { return shared_->done; });
  if (!done) {
    // The reader has stopped reading: the lines still queued are lost with the process.
    shared_->dropped.fetch_add(shared_->backlog_lines, std::memory_order_relaxed);
    lock.unlock();
    log_warn("access log: the reader is not keeping up; exiting without the last lines");
    writer_.detach();
    return;
  }
  lock.unlock();
  writer_.join();
}

bool AccessLogSink::submit(std::string& batch, std::uint64_t lines) const {
  if (!shared_) {  // off
    batch.clear();
    return true;
  }
  if (batch.empty()) return true;
  bool queued = false;
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    if (shared_->backlog.size() + batch.size() <= kMaxBacklogBytes) {
      if (shared_->backlog.empty())
        shared_->backlog.swap(batch);  // the common case: no copy
      else
        shared_->backlog.append(batch);
      shared_->backlog_lines += lines;
      queued = true;
    } else {
      shared_->dropped.fetch_add(lines, std::memory_order_relaxed);
    }
  }
  if (queued) shared_->wake.notify_one();
  batch.clear();
  return queued;
}

bool AccessLogSink::reopen() const {
  if (!shared_ || shared_->path.empty()) return false;
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    shared_->reopen = true;
  }
  shared_->wake.notify_one();
  return true;
}

std::uint64_t AccessLogSink::dropped_lines() const {
  return shared_ ? shared_->dropped.load(std::memory_order_relaxed) : 0;
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
  ++lines_;
  if (b.size() > 64 * 1024) flush();
}

void AccessLog::flush() {
  if (buffer_.empty()) return;
  sink_.submit(buffer_, lines_);
  lines_ = 0;
}

}  // namespace bulwark
