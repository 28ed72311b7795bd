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
#include "pipeline/h2_session.h"
#include "upstream/connection.h"

namespace bulwark {

namespace {
constexpr int kDrain = 1;
constexpr int kStop = 2;
constexpr int kEndpoints = 4;
constexpr int kWake = 8;
constexpr int kHealth = 16;
constexpr int kReload = 32;

std::uint64_t random_seed() {
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}
}  // namespace

Worker::Worker(int index, std::shared_ptr<const Generation> generation, WorkerStats& stats,
               const AccessLogSink& log_sink, std::vector<int> listen_fds,
               std::function<void()> on_exit)
    : index_(index),
      stats_(stats),
      access_log_(log_sink),
      on_exit_(std::move(on_exit)),
      heartbeat_ms_(uv_hrtime() / 1000000),  // not stalled before the loop's first turn
      read_buffer_(new char[kReadBufferSize]),
      ids_(random_seed()),
      fault_stage_(random_seed()) {
  uv_loop_init(&loop_);
  uv_async_init(&loop_, &async_, on_async);
  async_.data = this;
  uv_prepare_init(&loop_, &prepare_);
  prepare_.data = this;
  uv_timer_init(&loop_, &heartbeat_);
  heartbeat_.data = this;
  uv_timer_init(&loop_, &accept_retry_);
  accept_retry_.data = this;
  if (listen_fds.empty()) listen_fds.assign(generation->config->listeners.size(), -1);
  install(std::move(generation), listen_fds, {});
}

void GenerationPin::reset(WorkerGeneration* g) {
  if (g) ++g->pins;
  WorkerGeneration* old = g_;
  g_ = g;
  if (old && --old->pins == 0) old->worker->unpinned(old);
}

void Worker::unpinned(WorkerGeneration* g) {
  // Not the current one (the worker pins that): nothing uses it any more. Its Upstream
  // objects that the current generation does not share are closed (see make_upstream).
  for (std::size_t i = 0; i < generations_.size(); ++i)
    if (generations_[i].get() == g) {
      std::unique_ptr<WorkerGeneration> gone = std::move(generations_[i]);
      generations_.erase(generations_.begin() + static_cast<std::ptrdiff_t>(i));
      return;
    }
}

std::shared_ptr<Upstream> Worker::make_upstream(const std::shared_ptr<UpstreamState>& state) {
  auto* u = new Upstream(&loop_, *state, index_, random_seed());
  u->set_slot_freed_hook([this] {
    if (on_slot_freed) on_slot_freed();
  });
  u->refresh_endpoints();
  all_upstreams_.push_back(u);
  // The last generation using it has gone, so has every request that used it: its pools
  // drain (idle connections close; none is active) and it is freed once its handles closed.
  return std::shared_ptr<Upstream>(u, [this, state](Upstream* gone) {
    for (std::size_t i = 0; i < all_upstreams_.size(); ++i)
      if (all_upstreams_[i] == gone) {
        all_upstreams_[i] = all_upstreams_.back();
        all_upstreams_.pop_back();
        break;
      }
    gone->close_all();
    closing_upstreams_.push_back({std::unique_ptr<Upstream>(gone), state, turn_});
  });
}

void Worker::install(std::shared_ptr<const Generation> g, const std::vector<int>& listen_fds,
                     const std::vector<std::string>& keep) {
  auto wg = std::make_unique<WorkerGeneration>();
  wg->worker = this;
  wg->shared = g;
  const Config& c = *g->config;
  for (const auto& state : g->upstreams) {
    std::shared_ptr<Upstream> up;
    if (current_)
      for (const auto& old : current_->upstreams)
        if (&old->state() == state.get()) up = old;
    wg->upstreams.push_back(up ? up : make_upstream(state));
  }
  const Generation::WorkerPart& part = g->workers[static_cast<std::size_t>(index_)];
  for (std::size_t li = 0; li < c.listeners.size(); ++li) {
    auto v = std::make_unique<ListenerView>();
    v->generation = wg.get();
    v->config = &c.listeners[li];
    v->router = std::make_unique<Router>(c.listeners[li]);
    v->stats = part.listeners[li].get();
    for (const auto& rs : part.routes[li]) v->route_stats.push_back(rs.get());
    for (std::size_t ri = 0; ri < c.listeners[li].routes.size(); ++ri) {
      v->route_upstreams.push_back(
          wg->upstreams[static_cast<std::size_t>(g->route_upstreams[li][ri])].get());
      v->route_states.push_back(g->routes[li][ri].get());
    }
    wg->listeners.push_back(std::move(v));
  }
  WorkerGeneration* next = wg.get();
  generations_.push_back(std::move(wg));

  // Listeners: kept (by name) where no new socket came, new ones opened, the rest retired.
  std::vector<std::unique_ptr<ListenerRuntime>> old = std::move(listeners_);
  listeners_.clear();
  for (std::size_t li = 0; li < c.listeners.size(); ++li) {
    std::unique_ptr<ListenerRuntime> l;
    if (listen_fds[li] < 0 && li < keep.size())
      for (auto& o : old)
        if (o && o->name() == keep[li]) l = std::move(o);
    if (!l) {
      l = std::make_unique<ListenerRuntime>();
      l->worker = this;
      l->fd = listen_fds[li];
    } else if (l->view->stats != next->listeners[li]->stats) {
      // Renamed: its open connections count under the new name from now on.
      auto n = static_cast<std::int64_t>(l->connections);
      l->view->stats->connections.add(-n);
      next->listeners[li]->stats->connections.add(n);
    }
    l->view = next->listeners[li].get();
    l->pin.reset(next);
    if (running_ && !l->polling && l->fd >= 0) start_listening(*l);
    listeners_.push_back(std::move(l));
  }
  for (auto& o : old)
    if (o) retire_listener(std::move(o));
  current_ = next;
  current_pin_.reset(next);  // the previous generation goes once nothing else pins it
}

void Worker::start_listening(ListenerRuntime& l) {
  // Accepting by hand rather than with uv_listen: libuv answers EMFILE by accepting and
  // closing every pending connection without a word (and without telling us), where
  // Bulwark must answer 503 overloaded and count them.
  int rc = uv_poll_init(&loop_, &l.poll, l.fd);
  if (rc == 0) {
    l.polling = true;
    l.poll.data = &l;
    rc = accept_paused_ ? 0 : uv_poll_start(&l.poll, UV_READABLE, on_readable);
  }
  if (rc != 0) {
    log_error("worker " + std::to_string(index_) + ": listener " + l.name() + ": " +
              uv_strerror(rc));
    return;
  }
  l.open = true;
}

void Worker::retire_listener(std::unique_ptr<ListenerRuntime> l) {
  l->open = false;
  if (l->polling) {
    l->polling = false;
    // Closed at once: a client that connects from now on is refused, not left in a backlog.
    uv_close(reinterpret_cast<uv_handle_t*>(&l->poll), [](uv_handle_t* h) {
      static_cast<ListenerRuntime*>(h->data)->poll_closed = true;
    });
  } else {
    l->poll_closed = true;
  }
  if (l->fd >= 0) ::close(l->fd);
  l->fd = -1;
  for (ClientConnection* d = downstreams_.front(); d;) {
    ClientConnection* next = d->list_hook.next;
    if (&d->listener() == l.get()) d->drain();
    d = next;
  }
  retired_listeners_.push_back(std::move(l));
}

void Worker::sweep_retired() {
  for (std::size_t i = 0; i < retired_listeners_.size();) {
    ListenerRuntime& l = *retired_listeners_[i];
    if (l.connections == 0 && l.poll_closed) {
      retired_listeners_.erase(retired_listeners_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
  // Handles closed in one turn have had their close callbacks by the end of the next.
  for (std::size_t i = 0; i < closing_upstreams_.size();) {
    if (closing_upstreams_[i].turn + 2 <= turn_) {
      closing_upstreams_.erase(closing_upstreams_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
}

bool Worker::reload(std::shared_ptr<const Generation> generation, std::vector<int> listen_fds,
                    std::vector<std::string> keep) {
  {
    std::lock_guard<std::mutex> lock(notify_mutex_);
    if (notifiable_) {
      pending_reloads_.push_back({std::move(generation), std::move(listen_fds), std::move(keep)});
      command_.fetch_or(kReload);
      uv_async_send(&async_);
      return true;
    }
  }
  for (int fd : listen_fds)
    if (fd >= 0) ::close(fd);
  return false;
}

Worker::~Worker() {
  if (thread_.joinable()) thread_.join();
  for (auto& l : listeners_)
    if (l->fd >= 0) ::close(l->fd);  // never polled (the thread did not run)
  release_generations();
  if (reserve_fd_ >= 0) ::close(reserve_fd_);
}

void Worker::release_generations() {
  listeners_.clear();
  retired_listeners_.clear();
  current_ = nullptr;
  current_pin_.reset();
  generations_.clear();
  closing_upstreams_.clear();
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
  TurnWrites::set_current(&turn_writes_);
  reserve_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  running_ = true;
  for (auto& l : listeners_)
    if (l->fd >= 0) start_listening(*l);
  if (config().redis)
    redis_ = std::make_unique<RedisRateLimiter>(&loop_, *config().redis, stats_.redis_errors, &stats_);
  uv_prepare_start(&prepare_, on_prepare);
  if (uv_timer_start(&heartbeat_, on_heartbeat, 0, 1000) != 0)
    log_error("worker " + std::to_string(index_) + ": cannot start the heartbeat (/healthz)");
  // Commands that arrived before the loop ran are picked up here.
  uv_async_send(&async_);
  uv_run(&loop_, UV_RUN_DEFAULT);
  exchanges_.sweep();
  access_log_.flush();
  // Everything is closed; free what is left (closing what a last generation held) and close
  // the loop.
  release_generations();
  uv_run(&loop_, UV_RUN_DEFAULT);
  closing_upstreams_.clear();
  redis_.reset();
  TurnWrites::set_current(nullptr);
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
    throttle.log(LogLevel::error, "listener " + l->name() + ": accept: " + strerror(error));
    return;
  }
}

void Worker::serve(ListenerRuntime& l, int fd) {
  auto* d = new ClientConnection(l);
  add_downstream(d);
  if (!d->open(fd)) return;
  if (l.connections > l.view->config->max_connections) {  // over the listener's limit
    l.view->stats->accepts_refused[static_cast<int>(AcceptRefusal::max_connections)].add();
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
  throttle.log(LogLevel::warn, "listener " + l.name() + ": out of file descriptors (" +
                                   strerror(error) + "); answering new connections 503 overloaded");
  if (reserve_fd_ < 0) {
    pause_accepting();  // nothing to answer with: the connection waits in the backlog
    return;
  }
  ::close(reserve_fd_);
  reserve_fd_ = -1;
  int fd = ::accept4(l.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd >= 0) {
    l.view->stats->accepts_refused[static_cast<int>(AcceptRefusal::fd_limit)].add();
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
      log_error("worker " + std::to_string(w->index_) + ": listener " + l->name() +
                ": cannot resume accepting");
}

RequestBuffers* Worker::acquire_buffers() {
  if (free_buffers_.empty()) {
    buffers_.push_back(std::make_unique<RequestBuffers>());
    uv_timer_init(&loop_, &buffers_.back()->per_try_timer);
    uv_timer_init(&loop_, &buffers_.back()->backoff_timer);
    uv_timer_init(&loop_, &buffers_.back()->fault_timer);
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
    if (!l->polling && l->fd >= 0) ::close(l->fd);  // not polled yet
    if (!l->polling) l->fd = -1;
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
  for (Upstream* u : all_upstreams_) u->close_all();
  if (redis_) redis_->close();
  for (auto& b : buffers_)
    for (uv_timer_t* t : {&b->per_try_timer, &b->backoff_timer, &b->fault_timer})
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
  if (command & kReload) {
    std::vector<PendingReload> reloads;
    {
      std::lock_guard<std::mutex> lock(w->notify_mutex_);
      reloads.swap(w->pending_reloads_);
    }
    for (auto& r : reloads) {
      if (w->draining_) {  // listeners closed already: the new sockets are not needed
        for (int fd : r.fds)
          if (fd >= 0) ::close(fd);
        continue;
      }
      w->install(std::move(r.generation), r.fds, r.keep);
    }
  }
  if (command & kEndpoints)
    for (Upstream* u : w->all_upstreams_) u->refresh_endpoints();
  if (command & kWake) {
    for (Upstream* u : w->all_upstreams_) {
      u->admit_waiting();
      if (ShedGate* gate = u->shed_gate()) gate->wake();
    }
  }
  if (command & kHealth)
    for (Upstream* u : w->all_upstreams_) u->close_unhealthy_idle();
  if (command & kDrain) w->begin_drain();
}

void Worker::on_heartbeat(uv_timer_t* timer) {
  auto* w = static_cast<Worker*>(timer->data);
  w->heartbeat_ms_.store(uv_hrtime() / 1000000, std::memory_order_relaxed);
}

void Worker::on_prepare(uv_prepare_t* prepare) {
  static_cast<Worker*>(prepare->data)->between_turns();
}

void Worker::cancel_h2_flush(H2Session* s) {
  for (auto* list : {&h2_flush_, &h2_flushing_})
    for (H2Session*& q : *list)
      if (q == s) q = nullptr;
}

void Worker::between_turns() {
  turn_writes_.flush();  // the turn's HTTP/1 writes, back to back
  if (!h2_flush_.empty()) {
    h2_flushing_.swap(h2_flush_);
    for (std::size_t i = 0; i < h2_flushing_.size(); ++i)
      if (H2Session* s = h2_flushing_[i]) s->deferred_flush();
    h2_flushing_.clear();
    turn_writes_.flush();  // what the streams' upstream connections were handed
  }
  exchanges_.sweep();
  access_log_.flush();
  ++turn_;
  if (!retired_listeners_.empty() || !closing_upstreams_.empty()) sweep_retired();
}

}  // namespace bulwark
