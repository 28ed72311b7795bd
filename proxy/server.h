// The process: binds the listeners, starts one Worker per configured worker thread, serves
// the admin listener on the main thread, and turns signals into drain, stop or a reopened
// access log.
#pragma once

#include <uv.h>

#include <memory>
#include <vector>

#include "admin/access_log.h"
#include "admin/admin_server.h"
#include "admin/stats.h"
#include "config/config.h"
#include "upstream/dns.h"
#include "upstream/health.h"
#include "upstream/upstream_state.h"
#include "worker.h"

namespace bulwark {

class Server {
 public:
  explicit Server(Config config);
  ~Server();
  // Runs until drained (SIGTERM) or stopped (SIGINT). Returns the process exit code.
  int run();

 private:
  bool bind_listeners(std::vector<std::vector<int>>& fds);
  // SIGTERM: /ready turns 503 at once; the workers drain after drain.delay (or at once when
  // there is none, or on a second SIGTERM).
  void begin_drain();
  void drain_workers();
  void stop_workers();
  void on_worker_exit();
  void finish();
  std::string status_json() const;
  std::string metrics_text() const;

  static void on_signal(uv_signal_t* handle, int signum);
  static void on_async(uv_async_t* async);
  static void on_drain_timeout(uv_timer_t* timer);
  static void on_drain_delay(uv_timer_t* timer);
  static void on_dns_timer(uv_timer_t* timer);
  void start_upstreams();

  Config config_;
  uv_loop_t loop_{};
  void warn_if_descriptors_short() const;

  uv_signal_t sigterm_{}, sigint_{}, sighup_{}, sigusr1_{};
  uv_async_t worker_exit_{};
  uv_timer_t drain_timer_{};
  uv_timer_t delay_timer_{};
  std::unique_ptr<AccessLogSink> access_log_;
  std::vector<std::unique_ptr<UpstreamState>> upstreams_;
  std::vector<std::vector<std::unique_ptr<RouteState>>> routes_;  // by listener, route
  std::unique_ptr<UvResolver> resolver_;
  std::vector<std::unique_ptr<EndpointResolver>> endpoint_resolvers_;
  std::vector<std::unique_ptr<uv_timer_t>> dns_timers_;
  std::unique_ptr<HealthChecker> health_;
  std::vector<std::unique_ptr<WorkerStats>> stats_;
  std::unique_ptr<ProcessStats> process_stats_;
  std::unique_ptr<StatsCollector> collector_;
  std::unique_ptr<AdminServer> admin_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<int> workers_exited_{0};
  bool started_ = false;
  bool draining_ = false;         // /ready is 503
  bool workers_draining_ = false;  // listeners closed, in-flight requests finishing
  bool finished_ = false;
};

}  // namespace bulwark
