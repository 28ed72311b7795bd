#include "config/watcher.h"

#include <sys/stat.h>

#include <cstring>

#include "core/log.h"

namespace bulwark {

namespace {
std::string name_of(const std::string& file) {
  std::size_t slash = file.rfind('/');
  return slash == std::string::npos ? file : file.substr(slash + 1);
}

std::string directory_of(const std::string& file) {
  std::size_t slash = file.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return file.substr(0, slash);
}

void close_and_free(uv_handle_t* h) {
  if (!uv_is_closing(h)) uv_close(h, [](uv_handle_t* gone) { ::operator delete(gone); });
}
}  // namespace

ConfigWatcher::ConfigWatcher(uv_loop_t* loop, std::string file, std::uint64_t debounce_ms,
                             std::function<void()> on_change)
    : loop_(loop),
      file_(file),
      directory_(directory_of(file)),
      file_name_(name_of(file)),
      debounce_ms_(debounce_ms),
      on_change_(std::move(on_change)) {}

ConfigWatcher::~ConfigWatcher() { close(); }

ConfigWatcher::Identity ConfigWatcher::identify(const std::string& path, bool contents) {
  Identity id;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return id;
  id.exists = true;
  id.dev = static_cast<std::uint64_t>(st.st_dev);
  id.ino = static_cast<std::uint64_t>(st.st_ino);
  if (contents) {
    id.size = static_cast<std::uint64_t>(st.st_size);
    id.mtime_ns = static_cast<std::uint64_t>(st.st_mtim.tv_sec) * 1000000000ull +
                  static_cast<std::uint64_t>(st.st_mtim.tv_nsec);
  }
  return id;
}

bool ConfigWatcher::watch_directory(std::string& error) {
  uv_fs_event_stop(event_);
  int rc = uv_fs_event_start(event_, on_event, directory_.c_str(), 0);
  if (rc != 0) {
    error = "cannot watch " + directory_ + " for config changes: " + uv_strerror(rc);
    return false;
  }
  return true;
}

bool ConfigWatcher::start(std::string& error) {
  event_ = static_cast<uv_fs_event_t*>(::operator new(sizeof(uv_fs_event_t)));
  timer_ = static_cast<uv_timer_t*>(::operator new(sizeof(uv_timer_t)));
  recheck_ = static_cast<uv_timer_t*>(::operator new(sizeof(uv_timer_t)));
  uv_fs_event_init(loop_, event_);
  uv_timer_init(loop_, timer_);
  uv_timer_init(loop_, recheck_);
  event_->data = this;
  timer_->data = this;
  recheck_->data = this;
  directory_id_ = identify(directory_, false);
  file_id_ = identify(file_, true);
  if (!watch_directory(error)) {
    close();
    return false;
  }
  uv_timer_start(recheck_, on_recheck, 1000, 1000);
  return true;
}

void ConfigWatcher::on_recheck(uv_timer_t* timer) {
  auto* w = static_cast<ConfigWatcher*>(timer->data);
  if (!w) return;
  bool changed = false;
  Identity dir = identify(w->directory_, false);
  if (!(dir == w->directory_id_)) {
    // Replaced or gone: the watch on the old directory tells nothing any more.
    w->directory_id_ = dir;
    changed = true;
    std::string error;
    if (dir.exists && !w->watch_directory(error)) {
      static LogThrottle throttle(60000);
      throttle.log(LogLevel::warn, error + "; looking once a second instead");
    }
  }
  Identity file = identify(w->file_, true);
  if (!(file == w->file_id_)) {
    w->file_id_ = file;
    changed = true;
  }
  if (changed) w->trigger();
}

void ConfigWatcher::trigger() {
  // Not restarted by later events: a directory that never holds still cannot put the check
  // off for ever.
  if (timer_ && !uv_is_active(reinterpret_cast<uv_handle_t*>(timer_)))
    uv_timer_start(timer_, on_timer, debounce_ms_, 0);
}

void ConfigWatcher::close() {
  if (event_) {
    event_->data = nullptr;
    close_and_free(reinterpret_cast<uv_handle_t*>(event_));
    event_ = nullptr;
  }
  for (uv_timer_t** t : {&timer_, &recheck_})
    if (*t) {
      (*t)->data = nullptr;
      close_and_free(reinterpret_cast<uv_handle_t*>(*t));
      *t = nullptr;
    }
}

void ConfigWatcher::poke() {
  if (timer_) uv_timer_start(timer_, on_timer, debounce_ms_, 0);
}

void ConfigWatcher::on_event(uv_fs_event_t* handle, const char* name, int, int status) {
  auto* w = static_cast<ConfigWatcher*>(handle->data);
  if (!w) return;
  if (status < 0) {
    static LogThrottle throttle;
    throttle.log(LogLevel::warn,
                 "watching " + w->directory_ + " for config changes: " + uv_strerror(status));
    return;
  }
  // Other files in the directory (a log written next to the config) are not looked at; a
  // ConfigMap's ..data and ..TIMESTAMP entries are.
  if (name && w->file_name_ != name && std::strncmp(name, "..", 2) != 0) return;
  w->trigger();
}

void ConfigWatcher::on_timer(uv_timer_t* timer) {
  auto* w = static_cast<ConfigWatcher*>(timer->data);
  if (w && w->on_change_) w->on_change_();
}

}  // namespace bulwark
