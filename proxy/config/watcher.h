// Watches the directory that holds the config file, not the file itself: editors replace a
// file by renaming a new one over it, and a Kubernetes ConfigMap volume updates by swapping its
// `..data` symlink (the file is a symlink through it and never changes itself), both of which a
// watch on the file would miss. An event for the file (or for a ConfigMap's `..` entries)
// starts a short timer, unless it runs already; when it fires, `on_change` runs once for the
// burst of events (a swap is several). The caller compares the file's bytes and may poke()
// for another look when they are still changing. As a backstop, once a second it also looks at
// the directory and the file themselves (stat): a directory that was replaced (removed and
// made again, or another renamed over it) is watched afresh, and a change that no event told of
// starts the timer too.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

namespace bulwark {

class ConfigWatcher {
 public:
  ConfigWatcher(uv_loop_t* loop, std::string file, std::uint64_t debounce_ms,
                std::function<void()> on_change);
  ~ConfigWatcher();
  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;
  // Starts watching; false with `error` when the directory cannot be watched.
  bool start(std::string& error);
  void close();
  // Runs on_change again after the debounce period (the file was still changing).
  void poke();
  const std::string& directory() const { return directory_; }

 private:
  static void on_event(uv_fs_event_t* handle, const char* name, int events, int status);
  static void on_timer(uv_timer_t* timer);
  static void on_recheck(uv_timer_t* timer);
  void trigger();
  // What stat says of a path: changes when it is replaced or written.
  struct Identity {
    bool exists = false;
    std::uint64_t dev = 0, ino = 0, size = 0, mtime_ns = 0;
    bool operator==(const Identity&) const = default;
  };
  static Identity identify(const std::string& path, bool contents);
  bool watch_directory(std::string& error);

  uv_loop_t* loop_;
  std::string file_;
  std::string directory_;
  std::string file_name_;
  Identity directory_id_, file_id_;
  std::uint64_t debounce_ms_;
  std::function<void()> on_change_;
  // Both freed by their close callbacks (the watcher may go first).
  uv_fs_event_t* event_ = nullptr;
  uv_timer_t* timer_ = nullptr;
  uv_timer_t* recheck_ = nullptr;
};

}  // namespace bulwark
