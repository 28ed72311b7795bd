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
#include "generation.h"
#include "http/request_id.h"
#include "pipeline/bulkhead_stage.h"
#include "pipeline/client_connection.h"
#include "pipeline/exchange.h"
#include "pipeline/fault_stage.h"
#include "pipeline/generation_pin.h"
#include "pipeline/load_shedding_stage.h"
#include "pipeline/rate_limit_stage.h"
#include "pipeline/request_buffers.h"
#include "pipeline/route_state.h"
#include "pipeline/router.h"
#include "resilience/redis_limiter.h"
#include "upstream/upstream.h"

namespace bulwark {

class ClientConnection;
class H2Session;
class Worker;
struct WorkerGeneration;

// One listener as one generation configures it, on one worker: what a request on it uses.
struct ListenerView {
  WorkerGeneration* generation = nullptr;
  const ListenerConfig* config = nullptr;
  std::unique_ptr<Router> router;
  ListenerStats* stats = nullptr;
  std::vector<RouteStats*> route_stats;    // by route index, then the unmatched requests'
  std::vector<Upstream*> route_upstreams;  // by route index
  std::vector<RouteState*> route_states;   // by route index
  RouteStats& unmatched() const { return *route_stats.back(); }
};

// A generation (generation.h) on one worker: its views of the listeners and the worker's
// Upstream objects for its upstreams (shared with the next generation where the upstream is
// kept). Alive while it is the worker's current one or something pins it.
struct WorkerGeneration {
  Worker* worker = nullptr;
  std::shared_ptr<const Generation> shared;
  std::vector<std::shared_ptr<Upstream>> upstreams;      // by upstream index
  std::vector<std::unique_ptr<ListenerView>> listeners;  // by listener index
  int pins = 0;
};

// A listening socket of a worker and the connections accepted from it. Kept across reloads
// while the listener keeps its name and address (its connections stay open); `view` is the
// listener as the current generation configures it, which new requests use.
struct ListenerRuntime {
  Worker* worker = nullptr;
  ListenerView* view = nullptr;
  GenerationPin pin;  // keeps `view` alive
  int fd = -1;  // the listening socket; accepted from by hand (see Worker::on_readable)
  uv_poll_t poll{};
  bool polling = false;  // poll is initialised (closed with the listener)
  bool poll_closed = false;  // its close callback ran (a removed listener can be freed)
  std::uint64_t connections = 0;
  bool open = false;
  const std::string& name() const { return view->config->name; }
};

class Worker {
 public:
  // `listen_fds[i]` is this worker's socket for listener i of `generation` (none: the
  // listeners are not opened, for tests). `on_exit` runs on the worker thread when its loop
  // has finished.
  Worker(int index, std::shared_ptr<const Generation> generation, WorkerStats& stats,
         const AccessLogSink& log_sink, std::vector<int> listen_fds,
         std::function<void()> on_exit);
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
  // A reload: `generation` takes effect for new requests. Listener i gets `listen_fds[i]`, a
  // new socket, or when that is -1 keeps the socket (and the connections) of the listener
  // named `keep[i]` until now. Listeners not kept stop accepting; their connections finish
  // their requests and close. False (and the sockets closed) when the worker has ended.
  bool reload(std::shared_ptr<const Generation> generation, std::vector<int> listen_fds,
              std::vector<std::string> keep);
  // Called on this worker when one of its upstreams freed a slot and others may be waiting.
  std::function<void()> on_slot_freed;

  uv_loop_t* loop() { return &loop_; }
  char* read_buffer() { return read_buffer_.get(); }
  RequestIdGenerator& ids() { return ids_; }
  AccessLog& access_log() { return access_log_; }
  bool draining() const { return draining_; }
  // The current generation's upstream i and listener i.
  Upstream& upstream(std::size_t i) { return *current_->upstreams[i]; }
  ListenerRuntime& listener(std::size_t i) { return *listeners_[i]; }
  std::uint64_t generation() const { return current_->shared->number; }
  // Generations alive on this worker (the current one and those pinned), for tests.
  std::size_t generations() const { return generations_.size(); }
  int index() const { return index_; }
  // This worker's connection for global rate limits (null without a redis block).
  RedisRateLimiter* redis() { return redis_.get(); }
  // Milliseconds (uv_now of the worker's loop) of the last heartbeat; a loop that stops
  // turning stops updating it.
  std::uint64_t heartbeat_ms() const { return heartbeat_ms_.load(std::memory_order_relaxed); }
  // The loop has finished (a drained worker ends before the others): no heartbeat to expect.
  bool ended() const { return ended_.load(std::memory_order_acquire); }

  ExchangePool& exchanges() { return exchanges_; }
  // The small writes of the current loop turn, sent by between_turns().
  TurnWrites& turn_writes() { return turn_writes_; }
  // The admission stages every request passes, in order.
  const std::vector<AdmissionStage*>& admission_stages() const { return admission_; }

  // What the loop does before each turn (tests that turn the loop themselves call it): sends
  // the writes held during the turn (TurnWrites) and the HTTP/2 sessions' frames, frees the
  // exchanges that ended and what reloads left behind, flushes the access log.
  void between_turns();

  RequestBuffers* acquire_buffers();
  void release_buffers(RequestBuffers* b);

  void add_downstream(ClientConnection* d);
  void remove_downstream(ClientConnection* d);

 private:
  friend class GenerationPin;
  const Config& config() const { return *current_->shared->config; }
  // Makes `g` current: the worker's views and Upstream objects for it; the listeners
  // switched to it, opened and retired as `listen_fds` says.
  void install(std::shared_ptr<const Generation> g, const std::vector<int>& listen_fds,
               const std::vector<std::string>& keep);
  std::shared_ptr<Upstream> make_upstream(const std::shared_ptr<UpstreamState>& state);
  void start_listening(ListenerRuntime& l);
  // A removed listener: stops accepting; its connections finish their requests and close.
  void retire_listener(std::unique_ptr<ListenerRuntime> l);
  void unpinned(WorkerGeneration* g);  // its last pin went
  // Frees every generation, listener and Upstream object (closing what is still open).
  void release_generations();
  // Frees the removed listeners whose connections have closed and the Upstream objects that
  // no generation uses once their handles have closed.
  void sweep_retired();
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

 public:
  // HTTP/2 sessions with frames to send: framed once per loop turn, after every callback of
  // the turn, so the responses of many streams that complete together leave in one write.
  void defer_h2_flush(H2Session* s) { h2_flush_.push_back(s); }
  void cancel_h2_flush(H2Session* s);

 private:
  std::vector<H2Session*> h2_flush_;
  std::vector<H2Session*> h2_flushing_;
  TurnWrites turn_writes_;
  static void on_heartbeat(uv_timer_t* timer);

  int index_;
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
  // Generations alive on this worker; current_ is pinned by current_pin_.
  std::vector<std::unique_ptr<WorkerGeneration>> generations_;
  WorkerGeneration* current_ = nullptr;
  GenerationPin current_pin_;
  // Reloads handed over by the main thread, under notify_mutex_.
  struct PendingReload {
    std::shared_ptr<const Generation> generation;
    std::vector<int> fds;
    std::vector<std::string> keep;
  };
  std::vector<PendingReload> pending_reloads_;
  std::vector<std::unique_ptr<ListenerRuntime>> listeners_;  // by the current listener index
  std::vector<std::unique_ptr<ListenerRuntime>> retired_listeners_;
  std::vector<Upstream*> all_upstreams_;  // every Upstream object alive, of any generation
  struct ClosingUpstream {
    std::unique_ptr<Upstream> upstream;
    std::shared_ptr<UpstreamState> state;
    std::uint64_t turn;  // loop turn it was closed in
  };
  std::vector<ClosingUpstream> closing_upstreams_;
  std::uint64_t turn_ = 0;  // loop turns (prepare callbacks)
  bool running_ = false;    // the loop has started: new listeners are polled at once
  std::unique_ptr<RedisRateLimiter> redis_;
  std::vector<std::unique_ptr<RequestBuffers>> buffers_;  // all, owned here
  std::vector<RequestBuffers*> free_buffers_;
  ExchangePool exchanges_;
  FaultStage fault_stage_;
  RateLimitStage rate_limit_stage_{*this};
  LoadSheddingStage load_shedding_stage_;
  BulkheadStage bulkhead_stage_;
  std::vector<AdmissionStage*> admission_{&fault_stage_, &rate_limit_stage_,
                                          &load_shedding_stage_, &bulkhead_stage_};
  IntrusiveList<ClientConnection, &ClientConnection::list_hook> downstreams_;
  std::size_t downstream_count_ = 0;
  bool draining_ = false;
  bool shutting_down_ = false;
};

}  // namespace bulwark
