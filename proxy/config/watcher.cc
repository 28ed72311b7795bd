#include "config/watcher.h"

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
      directory_(directory_of(file)),
      file_name_(name_of(file)),
      debounce_ms_(debounce_ms),
      on_change_(std::move(on_change)) {}

ConfigWatcher::~ConfigWatcher() { close(); }

bool ConfigWatcher::start(std::string& error) {
  event_ = static_cast<uv_fs_event_t*>(::operator new(sizeof(uv_fs_event_t)));
  timer_ = static_cast<uv_timer_t*>(::operator new(sizeof(uv_timer_t)));
  uv_fs_event_init(loop_, event_);
  uv_timer_init(loop_, timer_);
  event_->data = this;
  timer_->data = this;
  int rc = uv_fs_event_start(event_, on_event, directory_.c_str(), 0);
  if (rc != 0) {
    error = "cannot watch " + directory_ + " for config changes: " + uv_strerror(rc);
    close();
    return false;
  }
  return true;
}

void ConfigWatcher::close() {
  if (event_) {
    event_->data = nullptr;
    close_and_free(reinterpret_cast<uv_handle_t*>(event_));
    event_ = nullptr;
  }
  if (timer_) {
    timer_->data = nullptr;
    close_and_free(reinterpret_cast<uv_handle_t*>(timer_));
    timer_ = nullptr;
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
  // Not restarted by later events: a directory that never holds still cannot put the check
  // off for ever.
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(w->timer_)))
    uv_timer_start(w->timer_, on_timer, w->debounce_ms_, 0);
}

void ConfigWatcher::on_timer(uv_timer_t* timer) {
  auto* w = static_cast<ConfigWatcher*>(timer->data);
  if (w && w->on_change_) w->on_change_();
}

}  // namespace bulwark
