#include "worker.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "core/log.h"
#include "http/local_reply.h"
#include "net/listener.h"
#include "pipeline/client_connection.h"
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
      heartbeat_ms_(uv_hrtime() / 1000000),  // not stalled before the loop's first turn
      read_buffer_(new char[kReadBufferSize]),
      ids_(random_seed()) {
  uv_loop_init(&loop_);
  uv_async_init(&loop_, &async_, on_async);
  async_.data = this;
  uv_prepare_init(&loop_, &prepare_);
  prepare_.data = this;
  uv_timer_init(&loop_, &heartbeat_);
  heartbeat_.data = this;
  uv_timer_init(&loop_, &accept_retry_);
  accept_retry_.data = this;
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
    listeners_.push_back(std::move(l));
  }
}

Worker::~Worker() {
  if (thread_.joinable()) thread_.join();
  for (auto& l : listeners_)
    if (l->fd >= 0) ::close(l->fd);  // never polled (the thread did not run)
  if (reserve_fd_ >= 0) ::close(reserve_fd_);
}

void Worker::start() {
  thread_ = std::thread([this] { run(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::notify(int command) {
  std::lock_guard<std::mutex> lock(notify_mutex_);
  if (!notifiable_) return;  // ended (or ending): its loop must not be touched
  command_.fetch_or(command);
  uv_async_send(&async_);
}

void Worker::drain() { notify(kDrain); }
void Worker::stop() { notify(kStop); }
void Worker::endpoints_changed() { notify(kEndpoints); }
void Worker::health_changed() { notify(kHealth); }
void Worker::wake_pending() { notify(kWake); }

void Worker::run() {
  set_upstream_read_buffer(read_buffer_.get());
  reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  for (std::size_t i = 0; i < listeners_.size(); ++i) {
    ListenerRuntime& l = *listeners_[i];
    l.fd = listen_fds_[i];
    // Accepting by hand rather than with uv_listen: libuv answers EMFILE by accepting and
    // closing every pending connection without a word (and without telling us), where
    // Bulwark must answer 503 overloaded and count them.
    int rc = uv_poll_init(&loop_, &l.poll, l.fd);
    if (rc == 0) {
      l.polling = true;
      l.poll.data = &l;
      rc = uv_poll_start(&l.poll, UV_READABLE, on_readable);
    }
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
  if (uv_timer_start(&heartbeat_, on_heartbeat, 0, 1000) != 0)
    log_error("worker " + std::to_string(index_) + ": cannot start the heartbeat (/healthz)");
  // Commands that arrived before the loop ran are picked up here.
  uv_async_send(&async_);
  uv_run(&loop_, UV_RUN_DEFAULT);
  exchanges_.sweep();
  access_log_.flush();
  // Everything is closed; free what is left and close the loop.
  upstreams_.clear();
  redis_.reset();
  int rc = uv_loop_close(&loop_);
  if (rc != 0) log_warn("worker " + std::to_string(index_) + ": loop closed with handles open");
  ended_.store(true, std::memory_order_release);
  if (on_exit_) on_exit_();
}

void Worker::on_readable(uv_poll_t* poll, int status, int) {
  auto* l = static_cast<ListenerRuntime*>(poll->data);
  Worker* w = l->worker;
  if (status < 0 || w->draining_ || w->shutting_down_) return;
  // A bounded batch per wake-up, so one busy listener cannot starve the loop's other work.
  for (int i = 0; i < 128 && l->open; ++i) {
    int fd = ::accept4(l->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      w->serve(*l, fd);
      continue;
    }
    int error = errno;
    if (error == EINTR || error == ECONNABORTED) continue;
    if (error == EAGAIN || error == EWOULDBLOCK) return;
    if (out_of_local_resources(error)) {
      w->refuse_for_fd_limit(*l, error);
      if (w->accept_paused_) return;
      continue;
    }
    static LogThrottle throttle;
    throttle.log(LogLevel::error, "listener " + l->config->name + ": accept: " + strerror(error));
    return;
  }
}

void Worker::serve(ListenerRuntime& l, int fd) {
  auto* d = new ClientConnection(l);
  add_downstream(d);
  if (!d->open(fd)) return;
  if (l.connections > l.config->max_connections) {  // over the listener's limit
    l.stats->accepts_refused[static_cast<int>(AcceptRefusal::max_connections)].add();
    d->close();
  }
}

namespace {

// The reply to a connection accepted with the reserve descriptor, made once.
const std::string& overloaded_reply() {
  static const std::string reply = [] {
    LocalReply r;
    r.reason = Reason::overloaded;
    r.detail = "Bulwark is out of file descriptors";
    r.extra = "Retry-After: 1\r\n";
    r.close = true;
    std::string out;
    write_local_reply(out, r);
    return out;
  }();
  return reply;
}

}  // namespace

void Worker::refuse_for_fd_limit(ListenerRuntime& l, int error) {
  static LogThrottle throttle;
  throttle.log(LogLevel::warn, "listener " + l.config->name + ": out of file descriptors (" +
                                   strerror(error) + "); answering new connections 503 overloaded");
  if (reserve_fd_ < 0) {
    pause_accepting();  // nothing to answer with: the connection waits in the backlog
    return;
  }
  ::close(reserve_fd_);
  reserve_fd_ = -1;
  int fd = ::accept4(l.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd >= 0) {
    l.stats->accepts_refused[static_cast<int>(AcceptRefusal::fd_limit)].add();
    // Read what the client has sent already, so closing does not reset the connection
    // (which can destroy the reply before the client reads it); the reply fits the socket
    // buffer of a new connection.
    char discard[4096];
    while (::recv(fd, discard, sizeof discard, MSG_DONTWAIT) > 0) {
    }
    const std::string& reply = overloaded_reply();
    ssize_t sent = ::send(fd, reply.data(), reply.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)sent;  // best effort: the client may be gone
    ::shutdown(fd, SHUT_WR);
    ::close(fd);
  }
  reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  // Another thread took the freed descriptor: answer nothing for a moment rather than spin.
  if (fd < 0 || reserve_fd_ < 0) pause_accepting();
}

void Worker::pause_accepting() {
  if (accept_paused_ || shutting_down_) return;
  accept_paused_ = true;
  for (auto& l : listeners_)
    if (l->open) uv_poll_stop(&l->poll);
  if (uv_timer_start(&accept_retry_, on_accept_retry, 100, 0) != 0) on_accept_retry(&accept_retry_);
}

void Worker::on_accept_retry(uv_timer_t* timer) {
  auto* w = static_cast<Worker*>(timer->data);
  w->accept_paused_ = false;
  if (w->reserve_fd_ < 0) w->reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (w->draining_ || w->shutting_down_) return;
  for (auto& l : w->listeners_)
    if (l->open && uv_poll_start(&l->poll, UV_READABLE, on_readable) != 0)
      log_error("worker " + std::to_string(w->index_) + ": listener " + l->config->name +
                ": cannot resume accepting");
}

RequestBuffers* Worker::acquire_buffers() {
  if (free_buffers_.empty()) {
    buffers_.push_back(std::make_unique<RequestBuffers>());
    uv_timer_init(&loop_, &buffers_.back()->per_try_timer);
    uv_timer_init(&loop_, &buffers_.back()->backoff_timer);
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
  b->stop_timers();
  free_buffers_.push_back(b);
}

void Worker::add_downstream(ClientConnection* d) {
  downstreams_.push_back(*d);
  ++downstream_count_;
}

void Worker::remove_downstream(ClientConnection* d) {
  downstreams_.remove(*d);
  --downstream_count_;
  if (shutting_down_ || draining_) {
    if (downstream_count_ == 0) shut_down();
  }
}

void Worker::close_listeners() {
  for (auto& l : listeners_) {
    l->open = false;
    if (!l->polling) continue;
    l->polling = false;
    // uv_close stops watching the socket at once, so it can be closed now: a client that
    // connects after this is refused rather than left in a backlog nobody accepts from.
    uv_close(reinterpret_cast<uv_handle_t*>(&l->poll), nullptr);
    ::close(l->fd);
    l->fd = -1;
  }
}

void Worker::begin_drain() {
  if (draining_) return;
  draining_ = true;
  close_listeners();
  for (ClientConnection* d = downstreams_.front(); d;) {
    ClientConnection* next = d->list_hook.next;
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
  for (ClientConnection* d = downstreams_.front(); d;) {
    ClientConnection* next = d->list_hook.next;
    d->close();
    d = next;
  }
  for (auto& u : upstreams_) u->close_all();
  if (redis_) redis_->close();
  for (auto& b : buffers_)
    for (uv_timer_t* t : {&b->per_try_timer, &b->backoff_timer})
      if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(t)))
        uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&async_))) {
    {
      // From here on other threads' notifications are dropped (see notify()).
      std::lock_guard<std::mutex> lock(notify_mutex_);
      notifiable_ = false;
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&heartbeat_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&accept_retry_), nullptr);
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
  if (command & kWake) {
    for (auto& u : w->upstreams_) {
      u->admit_waiting();
      if (ShedGate* gate = u->shed_gate()) gate->wake();
    }
  }
  if (command & kHealth)
    for (auto& u : w->upstreams_) u->close_unhealthy_idle();
  if (command & kDrain) w->begin_drain();
}

void Worker::on_heartbeat(uv_timer_t* timer) {
  auto* w = static_cast<Worker*>(timer->data);
  w->heartbeat_ms_.store(uv_hrtime() / 1000000, std::memory_order_relaxed);
}

void Worker::on_prepare(uv_prepare_t* prepare) {
  auto* w = static_cast<Worker*>(prepare->data);
  w->exchanges_.sweep();
  w->access_log_.flush();
}

}  // namespace bulwark
