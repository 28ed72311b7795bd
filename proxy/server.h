// The process: binds the listeners, starts one Worker per configured worker thread, serves
// the admin listener on the main thread, turns signals into drain, stop, reload or a reopened
// access log, and reloads the configuration when its file changes (server_reload.cc).
#pragma once

#include <uv.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "admin/access_log.h"
#include "admin/admin_server.h"
#include "admin/history.h"
#include "admin/stats.h"
#include "config/config.h"
#include "config/watcher.h"
#include "generation.h"
#include "upstream/dns.h"
#include "upstream/health.h"
#include "upstream/upstream_state.h"
#include "worker.h"

namespace bulwark {

class Server {
 public:
  // `text`: the file's bytes that `config` was loaded from (a change after that is applied).
  Server(Config config, std::string text);
  ~Server();
  // Runs until drained (SIGTERM) or stopped (SIGINT). Returns the process exit code.
  int run();

 private:
  const Config& config() const { return *generation_->config; }
  // Opens every worker's socket for `l`; the address bound is `bound` (port 0 resolved).
  bool bind_listener(const ListenerConfig& l, std::vector<int>& fds, Address& bound);
  // SIGTERM: /ready turns 503 at once; the workers drain after drain.delay (or at once when
  // there is none, or on a second SIGTERM).
  void begin_drain();
  void drain_workers();
  void stop_workers();
  void on_worker_exit();
  void finish();
  std::string status_json() const;
  std::string metrics_text() const;

  // Reload (server_reload.cc): SIGHUP, or the watcher saw the file change (`from_watch`: only
  // when its bytes differ from those last read).
  // `why`: the trigger named in the log when it is neither (certificate files changed).
  void reload(bool from_watch, const char* why = nullptr);
  // A watcher on each file a TLS listener reads (cert, key, client_ca): a change reloads, so
  // that a rotated certificate (a Secret's `..data` swap) serves new connections while the
  // open ones keep theirs. Re-made for the files of the config in effect.
  void sync_tls_watchers();
  struct LoadJob;
  void apply_reload(LoadJob& job);  // the file read and parsed: apply it or refuse it
  // Why `next` cannot replace the running config without a restart ("" when it can).
  std::string restart_needed(const Config& next) const;
  void reload_failed(const std::string& trigger, const std::vector<std::string>& errors);
  // Resolvers, DNS timers and hooks for the upstreams of generation_: kept for the states it
  // keeps, made for the new ones, stopped for the ones that are gone.
  void sync_upstreams();

  static void on_signal(uv_signal_t* handle, int signum);
  static void on_async(uv_async_t* async);
  static void on_drain_timeout(uv_timer_t* timer);
  static void on_drain_delay(uv_timer_t* timer);
  static void on_dns_timer(uv_timer_t* timer);
  static void on_history_timer(uv_timer_t* timer);
  static std::uint64_t wall_ms();

  std::shared_ptr<const Config> initial_;
  std::shared_ptr<const Generation> generation_;
  std::unique_ptr<StatsRegistry> registry_;
  uv_loop_t loop_{};
  void warn_if_descriptors_short() const;

  uv_signal_t sigterm_{}, sigint_{}, sighup_{}, sigusr1_{};
  uv_async_t worker_exit_{};
  uv_timer_t drain_timer_{};
  uv_timer_t delay_timer_{};
  // Certificate changes: the watchers of a Secret's files all see one ..data swap; their
  // triggers within 50 ms make one reload.
  uv_timer_t tls_timer_{};
  static void on_tls_timer(uv_timer_t* timer);
  uv_timer_t history_timer_{};  // every kWatchIntervalMs: history_.watch, every 4th a tick
  std::uint64_t history_watches_ = 0;
  StatusHistory history_;
  std::unique_ptr<AccessLogSink> access_log_;
  // An upstream's DNS refresh, for as long as its state is in the generation.
  struct UpstreamRuntime {
    std::shared_ptr<UpstreamState> state;
    std::unique_ptr<EndpointResolver> resolver;
    uv_timer_t* timer = nullptr;  // DNS refresh (names only); freed by its close callback
  };
  std::vector<UpstreamRuntime> upstream_runtimes_;
  // Resolvers of removed upstreams with lookups still out (freed when those have answered).
  std::vector<UpstreamRuntime> retired_resolvers_;
  std::unique_ptr<UvResolver> resolver_;
  std::unique_ptr<HealthChecker> health_;
  // The actual address of each listener of the generation in effect (port 0 resolved).
  std::vector<Address> bound_;
  std::vector<std::unique_ptr<WorkerStats>> stats_;
  std::unique_ptr<ProcessStats> process_stats_;
  std::unique_ptr<StatsCollector> collector_;
  std::unique_ptr<AdminServer> admin_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<ConfigWatcher> watcher_;
  std::map<std::string, std::unique_ptr<ConfigWatcher>> tls_watchers_;  // by file
  // The config file's bytes (or its read error) as last applied or refused.
  std::string last_fingerprint_;
  std::optional<std::string> settling_;  // seen once by the watcher; applied if it holds still
  bool loading_ = false;  // a LoadJob is out
  bool again_ = false;    // a trigger came meanwhile: load once more after it
  bool again_from_watch_ = true;
  std::string again_why_;  // the trigger of the reload to run again ("" : SIGHUP)
  std::string last_error_;  // of the last reload ("" when it succeeded)
  std::atomic<int> workers_exited_{0};
  bool started_ = false;
  bool draining_ = false;         // /ready is 503
  bool workers_draining_ = false;  // listeners closed, in-flight requests finishing
  bool finished_ = false;
};

}  // namespace bulwark
