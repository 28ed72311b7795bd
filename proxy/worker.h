// One event loop on its own thread: its listeners (own SO_REUSEPORT sockets), its client
// connections, and its upstream pools. Nothing here is shared with other workers; other
// threads talk to a worker only through the notifications below (drain, stop, endpoint and
// health changes, bulkhead wake-ups). A notification to a worker that has ended is dropped:
// it has nothing left to act on, and its loop is gone.
#pragma once

#include <uv.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "admin/access_log.h"
#include "admin/stats.h"
#include "config/config.h"
#include "http/request_id.h"
#include "pipeline/bulkhead_stage.h"
#include "pipeline/client_connection.h"
#include "pipeline/exchange.h"
#include "pipeline/load_shedding_stage.h"
#include "pipeline/rate_limit_stage.h"
#include "pipeline/request_buffers.h"
#include "pipeline/route_state.h"
#include "pipeline/router.h"
#include "resilience/redis_limiter.h"
#include "upstream/upstream.h"

namespace bulwark {

class ClientConnection;
class Worker;

struct ListenerRuntime {
  Worker* worker = nullptr;
  const ListenerConfig* config = nullptr;
  std::size_t index = 0;
  int fd = -1;  // the listening socket; accepted from by hand (see Worker::on_readable)
  uv_poll_t poll{};
  bool polling = false;  // poll is initialised (closed with the listener)
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
  // Thread-safe requests from other threads; no-ops once the worker has ended.
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
  // The loop has finished (a drained worker ends before the others): no heartbeat to expect.
  bool ended() const { return ended_.load(std::memory_order_acquire); }

  ExchangePool& exchanges() { return exchanges_; }
  // The admission stages every request passes, in order.
  const std::vector<AdmissionStage*>& admission_stages() const { return admission_; }

  RequestBuffers* acquire_buffers();
  void release_buffers(RequestBuffers* b);

  void add_downstream(ClientConnection* d);
  void remove_downstream(ClientConnection* d);

 private:
  void run();
  void begin_drain();
  void shut_down();
  void close_listeners();
  // Sets `command` bits and wakes the loop, unless the worker is ending (see shut_down()).
  void notify(int command);
  static void on_readable(uv_poll_t* poll, int status, int events);
  static void on_accept_retry(uv_timer_t* timer);
  void serve(ListenerRuntime& l, int fd);
  // accept() failed for want of descriptors: answer the connection 503 with the reserve
  // descriptor, or pause accepting briefly when even that is taken.
  void refuse_for_fd_limit(ListenerRuntime& l, int error);
  void pause_accepting();
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
  uv_timer_t accept_retry_{};
  bool accept_paused_ = false;
  // A descriptor held back for the moment the process runs out: closed to accept one
  // connection, answer it 503 overloaded and close it, then taken again.
  int reserve_fd_ = -1;
  std::atomic<std::uint64_t> heartbeat_ms_{0};
  std::atomic<bool> ended_{false};
  std::thread thread_;
  std::atomic<int> command_{0};  // bit 1: drain, bit 2: stop
  // Guards async_ against the worker's end: notify() sends under it, and shut_down() clears
  // notifiable_ under it before closing async_, so no uv_async_send can reach a closing
  // handle or a closed loop.
  std::mutex notify_mutex_;
  bool notifiable_ = true;
  std::unique_ptr<char[]> read_buffer_;
  RequestIdGenerator ids_;
  std::vector<std::unique_ptr<ListenerRuntime>> listeners_;
  std::vector<std::unique_ptr<Upstream>> upstreams_;
  std::unique_ptr<RedisRateLimiter> redis_;
  std::vector<std::unique_ptr<RequestBuffers>> buffers_;  // all, owned here
  std::vector<RequestBuffers*> free_buffers_;
  ExchangePool exchanges_;
  RateLimitStage rate_limit_stage_{*this};
  LoadSheddingStage load_shedding_stage_;
  BulkheadStage bulkhead_stage_;
  std::vector<AdmissionStage*> admission_{&rate_limit_stage_, &load_shedding_stage_,
                                          &bulkhead_stage_};
  IntrusiveList<ClientConnection, &ClientConnection::list_hook> downstreams_;
  std::size_t downstream_count_ = 0;
  bool draining_ = false;
  bool shutting_down_ = false;
};

}  // namespace bulwark
