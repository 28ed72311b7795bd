#include "worker.h"

#include <unistd.h>

#include <random>

#include "core/log.h"
#include "pipeline/downstream.h"
#include "upstream/connection.h"

namespace bulwark {

namespace {
constexpr int kDrain = 1;
constexpr int kStop = 2;
constexpr int kEndpoints = 4;
constexpr int kWake = 8;
constexpr int kHealth = 16;

std::uint64_t random_seed() {
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}
}  // namespace

Worker::Worker(int index, const Config& config, WorkerStats& stats, const AccessLogSink& log_sink,
               std::vector<UpstreamState*> upstreams,
               std::vector<std::vector<RouteState*>> route_states, std::vector<int> listen_fds,
               std::function<void()> on_exit)
    : index_(index),
      config_(config),
      stats_(stats),
      access_log_(log_sink),
      listen_fds_(std::move(listen_fds)),
      on_exit_(std::move(on_exit)),
      read_buffer_(new char[kReadBufferSize]),
      ids_(random_seed()) {
  uv_loop_init(&loop_);
  uv_async_init(&loop_, &async_, on_async);
  async_.data = this;
  uv_prepare_init(&loop_, &prepare_);
  prepare_.data = this;
  uv_timer_init(&loop_, &heartbeat_);
  heartbeat_.data = this;
  for (UpstreamState* state : upstreams) {
    upstreams_.push_back(std::make_unique<Upstream>(&loop_, *state, index, random_seed()));
    upstreams_.back()->set_slot_freed_hook([this] {
      if (on_slot_freed) on_slot_freed();
    });
  }
  for (std::size_t i = 0; i < config_.listeners.size(); ++i) {
    auto l = std::make_unique<ListenerRuntime>();
    l->worker = this;
    l->config = &config_.listeners[i];
    l->index = i;
    l->router = std::make_unique<Router>(config_.listeners[i]);
    l->stats = stats_.listeners[i].get();
    l->route_states = route_states[i];
    for (const auto& route : config_.listeners[i].routes) {
      Upstream* target = nullptr;
      for (std::size_t u = 0; u < config_.upstreams.size(); ++u)
        if (config_.upstreams[u].name == route.upstream) target = upstreams_[u].get();
      l->route_upstreams.push_back(target);
    }
    uv_tcp_init(&loop_, &l->server);
    l->server.data = l.get();
    listeners_.push_back(std::move(l));
  }
}

Worker::~Worker() {
  if (thread_.joinable()) thread_.join();
}

void Worker::start() {
  thread_ = std::thread([this] { run(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::drain() {
  command_.fetch_or(kDrain);
  uv_async_send(&async_);
}

void Worker::stop() {
  command_.fetch_or(kStop);
  uv_async_send(&async_);
}

void Worker::endpoints_changed() {
  command_.fetch_or(kEndpoints);
  uv_async_send(&async_);
}

void Worker::health_changed() {
  command_.fetch_or(kHealth);
  uv_async_send(&async_);
}

void Worker::wake_pending() {
  command_.fetch_or(kWake);
  uv_async_send(&async_);
}

void Worker::run() {
  set_upstream_read_buffer(read_buffer_.get());
  for (std::size_t i = 0; i < listeners_.size(); ++i) {
    ListenerRuntime& l = *listeners_[i];
    int rc = uv_tcp_open(&l.server, listen_fds_[i]);
    if (rc != 0) ::close(listen_fds_[i]);
    if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&l.server), 1024, on_connection);
    if (rc != 0) {
      log_error("worker " + std::to_string(index_) + ": listener " + l.config->name + ": " +
                uv_strerror(rc));
      continue;
    }
    l.open = true;
  }
  if (config_.redis_address) {
    std::string host, error;
    int port = 0;
    split_host_port(*config_.redis_address, host, port, error);
    redis_ = std::make_unique<RedisRateLimiter>(&loop_, host, port, config_.redis_timeout_ms,
                                                stats_.redis_errors);
  }
  uv_prepare_start(&prepare_, on_prepare);
  uv_timer_start(&heartbeat_, on_heartbeat, 0, 1000);
  // Commands that arrived before the loop ran are picked up here.
  uv_async_send(&async_);
  uv_run(&loop_, UV_RUN_DEFAULT);
  access_log_.flush();
  // Everything is closed; free what is left and close the loop.
  upstreams_.clear();
  redis_.reset();
  int rc = uv_loop_close(&loop_);
  if (rc != 0) log_warn("worker " + std::to_string(index_) + ": loop closed with handles open");
  if (on_exit_) on_exit_();
}

void Worker::on_connection(uv_stream_t* server, int status) {
  auto* l = static_cast<ListenerRuntime*>(server->data);
  Worker* w = l->worker;
  if (status < 0 || w->draining_) return;
  auto* d = new Downstream(*l);
  w->add_downstream(d);
  if (!d->accept(server)) return;
  if (l->connections > l->config->max_connections) d->close();  // over the listener's limit
}

RequestBuffers* Worker::acquire_buffers() {
  if (free_buffers_.empty()) {
    buffers_.push_back(std::make_unique<RequestBuffers>());
    uv_timer_init(&loop_, &buffers_.back()->attempt_timer);
    return buffers_.back().get();
  }
  RequestBuffers* b = free_buffers_.back();
  free_buffers_.pop_back();
  return b;
}

void Worker::release_buffers(RequestBuffers* b) {
  b->headers.clear();
  b->url.clear();
  b->resume_input.clear();
  b->queued_bytes.clear();
  b->out.clear();
  b->replay.clear();
  uv_timer_stop(&b->attempt_timer);
  free_buffers_.push_back(b);
}

void Worker::add_downstream(Downstream* d) {
  downstreams_.push_back(*d);
  ++downstream_count_;
}

void Worker::remove_downstream(Downstream* d) {
  downstreams_.remove(*d);
  --downstream_count_;
  if (shutting_down_ || draining_) {
    if (downstream_count_ == 0) shut_down();
  }
}

void Worker::close_listeners() {
  for (auto& l : listeners_) {
    if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&l->server))) continue;
    uv_close(reinterpret_cast<uv_handle_t*>(&l->server), nullptr);
    l->open = false;
  }
}

void Worker::begin_drain() {
  if (draining_) return;
  draining_ = true;
  close_listeners();
  for (Downstream* d = downstreams_.front(); d;) {
    Downstream* next = d->list_hook.next;
    d->drain();
    d = next;
  }
  if (downstream_count_ == 0) shut_down();
}

void Worker::shut_down() {
  if (shutting_down_ && downstream_count_ == 0 &&
      uv_is_closing(reinterpret_cast<uv_handle_t*>(&async_)))
    return;
  shutting_down_ = true;
  close_listeners();
  for (Downstream* d = downstreams_.front(); d;) {
    Downstream* next = d->list_hook.next;
    d->close();
    d = next;
  }
  for (auto& u : upstreams_) u->close_all();
  if (redis_) redis_->close();
  for (auto& b : buffers_)
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&b->attempt_timer)))
      uv_close(reinterpret_cast<uv_handle_t*>(&b->attempt_timer), nullptr);
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&async_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&heartbeat_), nullptr);
  }
}

void Worker::on_async(uv_async_t* async) {
  auto* w = static_cast<Worker*>(async->data);
  int command = w->command_.fetch_and(kDrain | kStop);  // drain and stop stay set
  if (command & kStop) {
    w->shut_down();
    return;
  }
  if (command & kEndpoints)
    for (auto& u : w->upstreams_) u->refresh_endpoints();
  if (command & kWake)
    for (auto& u : w->upstreams_) u->admit_waiting();
  if (command & kHealth)
    for (auto& u : w->upstreams_) u->close_unhealthy_idle();
  if (command & kDrain) w->begin_drain();
}

void Worker::on_heartbeat(uv_timer_t* timer) {
  auto* w = static_cast<Worker*>(timer->data);
  w->heartbeat_ms_.store(uv_hrtime() / 1000000, std::memory_order_relaxed);
}

void Worker::on_prepare(uv_prepare_t* prepare) {
  static_cast<Worker*>(prepare->data)->access_log_.flush();
}

}  // namespace bulwark
