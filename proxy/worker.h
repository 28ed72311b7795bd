// One event loop on its own thread: its listeners (own SO_REUSEPORT sockets), its client
// connections, and its upstream pools. Nothing here is shared with other workers; the
// main thread talks to a worker only through drain() and stop().
#pragma once

#include <uv.h>

#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "admin/access_log.h"
#include "admin/stats.h"
#include "config/config.h"
#include "http/request_id.h"
#include "pipeline/downstream.h"
#include "pipeline/request_buffers.h"
#include "pipeline/route_state.h"
#include "pipeline/router.h"
#include "resilience/redis_limiter.h"
#include "upstream/upstream.h"

namespace bulwark {

class Downstream;
class Worker;

struct ListenerRuntime {
  Worker* worker = nullptr;
  const ListenerConfig* config = nullptr;
  std::size_t index = 0;
  uv_tcp_t server{};
  std::unique_ptr<Router> router;
  ListenerStats* stats = nullptr;
  std::vector<Upstream*> route_upstreams;  // by route index
  std::vector<RouteState*> route_states;   // by route index
  std::uint64_t connections = 0;
  bool open = false;
};

class Worker {
 public:
  // `listen_fds[i]` is this worker's socket for listener i. `on_exit` runs on the worker
  // thread when its loop has finished.
  Worker(int index, const Config& config, WorkerStats& stats, const AccessLogSink& log_sink,
         std::vector<UpstreamState*> upstreams, std::vector<std::vector<RouteState*>> route_states,
         std::vector<int> listen_fds, std::function<void()> on_exit);
  ~Worker();

  void start();
  void join();
  // Thread-safe requests from the main thread.
  void drain();
  void stop();
  // An upstream's endpoint list changed.
  void endpoints_changed();
  // An endpoint was marked unhealthy.
  void health_changed();
  // A bulkhead slot was freed on another worker while requests wait.
  void wake_pending();
  // Called on this worker when one of its upstreams freed a slot and others may be waiting.
  std::function<void()> on_slot_freed;

  uv_loop_t* loop() { return &loop_; }
  char* read_buffer() { return read_buffer_.get(); }
  RequestIdGenerator& ids() { return ids_; }
  AccessLog& access_log() { return access_log_; }
  bool draining() const { return draining_; }
  Upstream& upstream(std::size_t i) { return *upstreams_[i]; }
  int index() const { return index_; }
  // This worker's connection for global rate limits (null without a redis block).
  RedisRateLimiter* redis() { return redis_.get(); }
  std::uint64_t redis_timeout_ms() const { return config_.redis_timeout_ms; }
  // Milliseconds (uv_now of the worker's loop) of the last heartbeat; a loop that stops
  // turning stops updating it.
  std::uint64_t heartbeat_ms() const { return heartbeat_ms_.load(std::memory_order_relaxed); }

  RequestBuffers* acquire_buffers();
  void release_buffers(RequestBuffers* b);

  void add_downstream(Downstream* d);
  void remove_downstream(Downstream* d);

 private:
  void run();
  void begin_drain();
  void shut_down();
  void close_listeners();
  static void on_connection(uv_stream_t* server, int status);
  static void on_async(uv_async_t* async);
  static void on_prepare(uv_prepare_t* prepare);
  static void on_heartbeat(uv_timer_t* timer);

  int index_;
  const Config& config_;
  WorkerStats& stats_;
  AccessLog access_log_;
  std::vector<int> listen_fds_;
  std::function<void()> on_exit_;
  uv_loop_t loop_{};
  uv_async_t async_{};
  uv_prepare_t prepare_{};
  uv_timer_t heartbeat_{};
  std::atomic<std::uint64_t> heartbeat_ms_{0};
  std::thread thread_;
  std::atomic<int> command_{0};  // bit 1: drain, bit 2: stop
  std::unique_ptr<char[]> read_buffer_;
  RequestIdGenerator ids_;
  std::vector<std::unique_ptr<ListenerRuntime>> listeners_;
  std::vector<std::unique_ptr<Upstream>> upstreams_;
  std::unique_ptr<RedisRateLimiter> redis_;
  std::vector<std::unique_ptr<RequestBuffers>> buffers_;  // all, owned here
  std::vector<RequestBuffers*> free_buffers_;
  IntrusiveList<Downstream, &Downstream::list_hook> downstreams_;
  std::size_t downstream_count_ = 0;
  bool draining_ = false;
  bool shutting_down_ = false;
};

}  // namespace bulwark
