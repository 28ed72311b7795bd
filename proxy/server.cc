#include "server.h"

#include <prometheus/text_serializer.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <map>
#include <sstream>

#include "config/json.h"
#include "config/lint.h"
#include "config/loader.h"
#include "core/json.h"
#include "core/log.h"
#include "net/listener.h"

namespace bulwark {

Server::Server(Config config, std::string text)
    : initial_(std::make_shared<const Config>(std::move(config))),
      last_fingerprint_(std::move(text)) {
  uv_loop_init(&loop_);
}

Server::~Server() {
  for (auto& w : workers_) w->join();
  workers_.clear();
  uv_loop_close(&loop_);
}

bool Server::bind_listener(const ListenerConfig& l, std::vector<int>& fds, Address& bound) {
  int workers = config().workers;
  bool reuse = workers > 1;
  Address address = l.address;
  fds.clear();
  for (int w = 0; w < workers; ++w) {
    std::string error;
    Address got;
    int fd = open_listen_socket(address, reuse, 1024, got, error);
    if (fd < 0) {
      log_error("listener " + l.name + ": " + error);
      for (int f : fds) ::close(f);
      fds.clear();
      return false;
    }
    if (w == 0) {
      // With port 0 every worker's socket must share the port the first one got.
      address = got;
      bound = got;
      log_info("listener " + l.name + " listening on " + got.to_string());
    }
    fds.push_back(fd);
  }
  return true;
}

int Server::run() {
  std::string error;
  const int worker_count = initial_->workers;
  registry_ = std::make_unique<StatsRegistry>(worker_count);
  generation_ = build_generation(initial_, nullptr, *registry_);
  // Risky but valid policies, as `bulwark --check` prints them: one line each.
  for (const auto& w : lint_config(config())) log_warn("config warning: " + w);
  access_log_ = AccessLogSink::open(config().access_log_path, error);
  if (!access_log_) {
    log_error(error);
    return 1;
  }
  // fds[worker][listener]
  std::vector<std::vector<int>> fds(static_cast<std::size_t>(worker_count));
  auto close_all = [&fds] {
    for (auto& list : fds)
      for (int f : list)
        if (f >= 0) ::close(f);
  };
  for (const auto& l : config().listeners) {
    std::vector<int> per_worker;
    Address bound;
    if (!bind_listener(l, per_worker, bound)) {
      close_all();
      return 1;
    }
    bound_.push_back(bound);
    for (std::size_t w = 0; w < per_worker.size(); ++w) fds[w].push_back(per_worker[w]);
  }

  warn_if_descriptors_short();

  std::vector<const WorkerStats*> views;
  for (int i = 0; i < worker_count; ++i) {
    stats_.push_back(std::make_unique<WorkerStats>());
    views.push_back(stats_.back().get());
  }
  process_stats_ = std::make_unique<ProcessStats>();
  process_stats_->access_log = access_log_.get();
  resolver_ = std::make_unique<UvResolver>(&loop_);
  collector_ = std::make_unique<StatsCollector>(generation_, views, *process_stats_);

  AdminHandlers handlers;
  handlers.metrics = [this] { return metrics_text(); };
  handlers.ready = [this] { return started_ && !draining_; };
  handlers.live = [this] {
    std::uint64_t now = uv_hrtime() / 1000000;
    for (const auto& w : workers_)  // a worker that has drained and ended is not stalled
      if (!w->ended() && now > w->heartbeat_ms() + 5000) return false;
    return true;
  };
  handlers.status = [this] { return status_json(); };
  handlers.config = [this] { return config_to_json(config()); };
  handlers.history = [this] { return history_.json(); };
  handlers.refused = [this] {
    process_stats_->admin_connections_refused.add();
    static LogThrottle throttle;
    throttle.log(LogLevel::warn,
                 "admin: " + std::to_string(config().admin_max_connections) +
                     " connections open (admin.max_connections); closing a new one");
  };
  AdminLimits limits;
  limits.header_timeout_ms = config().admin_header_timeout_ms;
  limits.idle_timeout_ms = config().admin_idle_timeout_ms;
  limits.max_connections = config().admin_max_connections;
  admin_ = std::make_unique<AdminServer>(&loop_, handlers, limits);
  if (!admin_->listen(config().admin_address, error)) {
    log_error(error);
    close_all();
    admin_->close();
    uv_run(&loop_, UV_RUN_DEFAULT);
    return 1;
  }
  log_info("admin listening on " + admin_->bound().to_string());

  uv_async_init(&loop_, &worker_exit_, on_async);
  worker_exit_.data = this;
  uv_timer_init(&loop_, &drain_timer_);
  drain_timer_.data = this;
  uv_timer_init(&loop_, &delay_timer_);
  delay_timer_.data = this;
  uv_timer_init(&loop_, &tls_timer_);
  tls_timer_.data = this;
  uv_timer_init(&loop_, &history_timer_);
  history_timer_.data = this;
  history_.tick(*generation_, wall_ms());
  uv_timer_start(&history_timer_, on_history_timer, StatusHistory::kWatchIntervalMs,
                 StatusHistory::kWatchIntervalMs);
  for (uv_signal_t* s : {&sigterm_, &sigint_, &sighup_, &sigusr1_}) {
    uv_signal_init(&loop_, s);
    s->data = this;
  }
  uv_signal_start(&sigterm_, on_signal, SIGTERM);
  uv_signal_start(&sigint_, on_signal, SIGINT);
  uv_signal_start(&sighup_, on_signal, SIGHUP);
  uv_signal_start(&sigusr1_, on_signal, SIGUSR1);
  std::signal(SIGPIPE, SIG_IGN);

  health_ = std::make_unique<HealthChecker>(&loop_, std::vector<UpstreamState*>{});
  sync_upstreams();  // endpoints resolved before the workers take them
  for (int i = 0; i < worker_count; ++i) {
    workers_.push_back(std::make_unique<Worker>(i, generation_,
                                                *stats_[static_cast<std::size_t>(i)],
                                                *access_log_, fds[static_cast<std::size_t>(i)],
                                                [this] {
                                                  workers_exited_.fetch_add(1);
                                                  uv_async_send(&worker_exit_);
                                                }));
  }
  for (auto& w : workers_) {
    Worker* self = w.get();
    w->on_slot_freed = [this, self] {
      for (auto& other : workers_)
        if (other.get() != self) other->wake_pending();
    };
  }
  if (!config().file.empty()) {
    watcher_ = std::make_unique<ConfigWatcher>(&loop_, config().file, 200, [this] { reload(true); });
    if (!watcher_->start(error)) {
      log_warn(error + "; reload with SIGHUP");
      watcher_.reset();
    } else {
      // A change made while starting (after main() read the file) is applied now. Compared
      // here rather than by a reload job: no thread pool is started for an unchanged file.
      std::string text, read_error;
      if (!read_config_file(config().file, text, read_error) || text != last_fingerprint_)
        reload(true);
    }
    sync_tls_watchers();
  }
  for (auto& w : workers_) w->start();
  started_ = true;
  log_info("bulwark " BULWARK_VERSION " started with " + std::to_string(worker_count) +
           " worker(s)");
  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->join();
  log_info("bulwark stopped");
  return 0;
}

// Every client connection, upstream connection and listening socket is a descriptor. When
// the configured limits could need more than RLIMIT_NOFILE allows, connections past it are
// answered 503 overloaded: say so at start rather than at the first burst.
void Server::warn_if_descriptors_short() const {
  rlimit files{};
  if (getrlimit(RLIMIT_NOFILE, &files) != 0 || files.rlim_cur == RLIM_INFINITY) return;
  std::uint64_t clients = 0, upstream = 0, probes = 0;
  auto workers = static_cast<std::uint64_t>(config().workers);
  for (const auto& l : config().listeners) clients += l.max_connections * workers;  // per worker
  for (const auto& u : config().upstreams) {
    upstream += u.pool.max_connections * u.endpoints.size();
    if (u.health_check) probes += u.endpoints.size();
  }
  // Per worker: its loop, wake-up and reserve descriptors, one listening socket per listener
  // and one Redis connection; then the admin listener, its connections, signals and logs.
  std::uint64_t fixed =
      workers * (6 + config().listeners.size()) + config().admin_max_connections + probes + 16;
  std::uint64_t need = clients + upstream + fixed;
  if (need <= files.rlim_cur) return;
  log_warn("file descriptor limit (RLIMIT_NOFILE) is " + std::to_string(files.rlim_cur) +
           ", but the configured limits may need " + std::to_string(need) + " (listeners' " +
           "max_connections " + std::to_string(clients) + " + upstream pools' max_connections " +
           std::to_string(upstream) + " + about " + std::to_string(fixed) +
           " of Bulwark's own); past the limit new connections are answered 503 overloaded. "
           "Raise the limit (ulimit -n, LimitNOFILE=) or lower max_connections.");
}

void Server::on_signal(uv_signal_t* handle, int signum) {
  auto* s = static_cast<Server*>(handle->data);
  if (signum == SIGTERM) {
    s->begin_drain();
  } else if (signum == SIGINT) {
    log_info("SIGINT: stopping");
    s->stop_workers();
  } else if (signum == SIGHUP) {
    s->reload(false);
  } else if (signum == SIGUSR1) {
    // logrotate renames the file, then signals: new lines go to a new file at the path.
    if (!s->access_log_->reopen())
      log_info("SIGUSR1: the access log is " + s->config().access_log_path +
               ", not a file: nothing to reopen");
  }
}

void Server::begin_drain() {
  if (workers_draining_) return;
  if (draining_ || config().drain_delay_ms == 0) {
    if (draining_) log_info("SIGTERM again: draining now");
    drain_workers();
    return;
  }
  draining_ = true;  // /ready: 503 from now on
  log_info("SIGTERM: /ready now answers 503; serving for " +
           std::to_string(config().drain_delay_ms) + "ms (drain.delay), then draining");
  if (uv_timer_start(&delay_timer_, on_drain_delay, config().drain_delay_ms, 0) != 0)
    drain_workers();
}

std::uint64_t Server::wall_ms() {
  uv_timeval64_t now{};
  uv_gettimeofday(&now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1000 +
         static_cast<std::uint64_t>(now.tv_usec) / 1000;
}

void Server::on_history_timer(uv_timer_t* timer) {
  auto* s = static_cast<Server*>(timer->data);
  // A sample a second (1000 / kWatchIntervalMs watches), transitions at every watch.
  if (++s->history_watches_ % (1000 / StatusHistory::kWatchIntervalMs) == 0)
    s->history_.tick(*s->generation_, wall_ms());
  else
    s->history_.watch(*s->generation_, wall_ms());
}

void Server::on_drain_delay(uv_timer_t* timer) { static_cast<Server*>(timer->data)->drain_workers(); }

void Server::drain_workers() {
  if (workers_draining_) return;
  draining_ = true;
  workers_draining_ = true;
  uv_timer_stop(&delay_timer_);
  log_info("draining: listeners closed, finishing requests in flight (timeout " +
           std::to_string(config().drain_timeout_ms) + "ms)");
  for (auto& w : workers_) w->drain();
  if (uv_timer_start(&drain_timer_, on_drain_timeout, config().drain_timeout_ms, 0) != 0)
    stop_workers();  // no bound on the drain: stop now rather than wait forever
}

void Server::on_drain_timeout(uv_timer_t* timer) {
  auto* s = static_cast<Server*>(timer->data);
  log_warn("drain timeout: closing the connections still open");
  s->stop_workers();
}

void Server::stop_workers() {
  draining_ = true;
  workers_draining_ = true;
  uv_timer_stop(&delay_timer_);
  for (auto& w : workers_) w->stop();
}

void Server::on_async(uv_async_t* async) {
  auto* s = static_cast<Server*>(async->data);
  if (s->workers_exited_.load() == static_cast<int>(s->workers_.size())) s->finish();
}

void Server::finish() {
  if (finished_) return;
  finished_ = true;
  admin_->close();
  uv_close(reinterpret_cast<uv_handle_t*>(&worker_exit_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&delay_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&tls_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&history_timer_), nullptr);
  for (uv_signal_t* sig : {&sigterm_, &sigint_, &sighup_, &sigusr1_})
    uv_close(reinterpret_cast<uv_handle_t*>(sig), nullptr);
  for (auto* list : {&upstream_runtimes_, &retired_resolvers_})
    for (auto& u : *list)
      if (u.timer) {
        uv_close(reinterpret_cast<uv_handle_t*>(u.timer),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
        u.timer = nullptr;
      }
  if (watcher_) watcher_->close();
  for (auto& [file, w] : tls_watchers_) w->close();
  health_->close();
}

std::string Server::metrics_text() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, collector_->Collect());
  return out.str();
}

namespace {
// An upstream's load shedding for /status: null when it has none.
std::string shedding_json(const LoadShedder* s) {
  if (!s) return "null";
  LoadShedder::RttWindow rtt = s->recent_rtt();
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"algorithm\":\"%s\",\"enforce\":%s,\"limit\":%d,\"in_flight\":%lld,"
                "\"critical_in_flight\":%lld,\"queued\":%lld,\"queue_size\":%llu,"
                "\"rtt_us\":{\"min\":%llu,\"avg\":%llu,\"samples\":%llu},"
                "\"shed\":{\"critical\":%llu,\"normal\":%llu,\"sheddable\":%llu}}",
                s->algorithm(), s->config().enforce ? "true" : "false", s->limit(),
                static_cast<long long>(s->in_flight()),
                static_cast<long long>(s->critical_in_flight()),
                static_cast<long long>(s->queued()),
                static_cast<unsigned long long>(s->config().queue_size),
                static_cast<unsigned long long>(rtt.min_us),
                static_cast<unsigned long long>(rtt.avg_us),
                static_cast<unsigned long long>(rtt.samples),
                static_cast<unsigned long long>(s->shed(Priority::critical)),
                static_cast<unsigned long long>(s->shed(Priority::normal)),
                static_cast<unsigned long long>(s->shed(Priority::sheddable)));
  return buf;
}
}  // namespace

std::string Server::status_json() const {
  std::string out = "{\"draining\":";
  out += draining_ ? "true" : "false";
  out += ",\"reload\":{\"generation\":" + std::to_string(generation_->number) +
         ",\"success\":" + std::to_string(process_stats_->reloads[0].get()) +
         ",\"failure\":" + std::to_string(process_stats_->reloads[1].get()) +
         ",\"last_error\":";
  append_json_string(out, last_error_);
  out += "}";
  out += ",\"workers\":" + std::to_string(workers_.size()) + ",\"upstreams\":[";
  const Generation& g = *generation_;
  for (std::size_t u = 0; u < g.upstreams.size(); ++u) {
    const UpstreamState& state = *g.upstreams[u];
    if (u) out += ",";
    out += "{\"name\":";
    append_json_string(out, state.config().name);
    out += ",\"balance\":";
    append_json_string(out, state.config().balance);
    out += ",\"in_flight\":" + std::to_string(state.in_flight()) +
           ",\"pending\":" + std::to_string(state.pending()) +
           ",\"max_requests\":" + std::to_string(state.config().limits.max_requests) +
           ",\"load_shedding\":" + shedding_json(state.shedder()) + ",\"endpoints\":[";
    auto endpoints = state.endpoints();
    for (std::size_t e = 0; e < endpoints->size(); ++e) {
      const EndpointState& ep = *(*endpoints)[e];
      std::int64_t in_flight = 0, active = 0, idle = 0, streams = 0;
      for (int w = 0; w < config().workers; ++w) {
        in_flight += ep.per_worker[w].in_flight.get();
        active += ep.per_worker[w].active.get();
        idle += ep.per_worker[w].idle.get();
        streams += ep.per_worker[w].h2_streams.get();
      }
      if (e) out += ",";
      out += "{\"address\":";
      append_json_string(out, ep.name);
      std::string breaker = "\"disabled\"";
      if (const CircuitBreaker* b = ep.breaker.get()) {
        std::uint64_t now = uv_hrtime() / 1000000, until = b->open_until_ms();
        breaker = "{\"state\":\"" + std::string(breaker_state_name(b->state())) +
                  "\",\"open_for_ms\":" + std::to_string(until > now ? until - now : 0) + "}";
      }
      std::string health = state.config().health_check
                               ? std::string("\"") + health_name(ep.health_state()) + "\""
                               : "\"unchecked\"";
      out += ",\"health\":" + health + ",\"breaker\":" + breaker +
             ",\"in_flight\":" + std::to_string(in_flight) +
             ",\"pool\":{\"active\":" + std::to_string(active) +
             ",\"idle\":" + std::to_string(idle) + "}";
      if (state.config().h2) {
        // HTTP/2: the pool's connections carry these streams.
        std::int64_t conns = active + idle;
        char buf[128];
        std::snprintf(buf, sizeof buf,
                      ",\"http2\":{\"streams\":%lld,\"streams_per_connection\":%.2f}",
                      static_cast<long long>(streams),
                      conns ? static_cast<double>(streams) / static_cast<double>(conns) : 0.0);
        out += buf;
      }
      out += "}";
    }
    out += "]}";
  }
  out += "],\"routes\":[";
  bool first = true;
  for (std::size_t li = 0; li < config().listeners.size(); ++li) {
    const auto& l = config().listeners[li];
    for (std::size_t ri = 0; ri < l.routes.size(); ++ri) {
      const auto& r = l.routes[ri];
      if (!first) out += ",";
      first = false;
      out += "{\"listener\":";
      append_json_string(out, l.name);
      out += ",\"route\":";
      append_json_string(out, r.name);
      out += ",\"upstream\":";
      append_json_string(out, r.upstream);
      out += ",\"rate_limit\":";
      const RouteState& state = *g.routes[li][ri];
      if (!state.limiter) {
        out += "null}";
        continue;
      }
      const RateLimitConfig& rl = *r.rate_limit;
      char buf[256];
      std::snprintf(buf, sizeof buf,
                    "{\"rate_per_second\":%g,\"burst\":%g,\"scope\":\"%s\",\"enforce\":%s,"
                    "\"active_keys\":%zu,\"evictions\":%llu,\"key\":",
                    rl.rate_per_second, rl.burst, rl.scope.c_str(), rl.enforce ? "true" : "false",
                    state.limiter->active_keys(uv_hrtime() / 1000),
                    static_cast<unsigned long long>(state.limiter->evictions()));
      out += buf;
      append_json_string(out, rl.key);
      out += "}}";
    }
  }
  // Client connections per listener; HTTP/2 ones with their open streams.
  out += "],\"listeners\":[";
  for (std::size_t li = 0; li < config().listeners.size(); ++li) {
    const auto& l = config().listeners[li];
    std::int64_t conns = 0, h2_conns = 0, streams = 0;
    for (const auto& w : g.workers) {
      conns += w.listeners[li]->connections.get();
      h2_conns += w.listeners[li]->h2_connections.get();
      streams += w.listeners[li]->h2_streams.get();
    }
    if (li) out += ",";
    out += "{\"name\":";
    append_json_string(out, l.name);
    out += ",\"connections\":" + std::to_string(conns);
    if (l.h2 || l.h2c) {
      char buf[160];
      std::snprintf(buf, sizeof buf,
                    ",\"http2\":{\"connections\":%lld,\"streams\":%lld,"
                    "\"streams_per_connection\":%.2f}",
                    static_cast<long long>(h2_conns), static_cast<long long>(streams),
                    h2_conns ? static_cast<double>(streams) / static_cast<double>(h2_conns) : 0.0);
      out += buf;
    }
    out += "}";
  }
  out += "]";
  if (config().redis) {
    // Redis as the workers see it: each server with how many workers can send to it now.
    const RedisConfig& rc = *config().redis;
    std::int64_t replicas = 0;
    std::vector<const WorkerStats*> workers;
    for (const auto& w : stats_) {
      replicas = std::max<std::int64_t>(replicas, w->redis_replicas.get());
      workers.push_back(w.get());
    }
    out += ",\"redis\":{\"mode\":";
    append_json_string(out, rc.mode);
    out += ",\"replicas\":" + std::to_string(replicas) + ",\"nodes\":[";
    bool first_node = true;
    for (const auto& [address, t] : redis_node_totals(workers)) {
      if (!first_node) out += ",";
      first_node = false;
      bool sentinel = address.rfind("sentinel ", 0) == 0;
      out += "{\"address\":";
      append_json_string(out, sentinel ? address.substr(9) : address);
      out += std::string(",\"role\":\"") + (sentinel ? "sentinel" : "data") + "\",\"up_workers\":" +
             std::to_string(t.up) + ",\"errors\":" + std::to_string(t.errors) + "}";
    }
    out += "]}";
  }
  out += "}";
  return out;
}

}  // namespace bulwark
