#include "server.h"

#include <prometheus/text_serializer.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <sstream>

#include "config/json.h"
#include "core/json.h"
#include "core/log.h"
#include "net/listener.h"

namespace bulwark {

Server::Server(Config config) : config_(std::move(config)) { uv_loop_init(&loop_); }

Server::~Server() {
  for (auto& w : workers_) w->join();
  uv_loop_close(&loop_);
}

bool Server::bind_listeners(std::vector<std::vector<int>>& fds) {
  fds.assign(static_cast<std::size_t>(config_.workers), std::vector<int>());
  bool reuse = config_.workers > 1;
  for (auto& l : config_.listeners) {
    Address address = l.address;
    for (int w = 0; w < config_.workers; ++w) {
      std::string error;
      Address bound;
      int fd = open_listen_socket(address, reuse, 1024, bound, error);
      if (fd < 0) {
        log_error("listener " + l.name + ": " + error);
        for (auto& list : fds)
          for (int f : list) ::close(f);
        return false;
      }
      if (w == 0) {
        // With port 0 every worker's socket must share the port the first one got.
        address = bound;
        log_info("listener " + l.name + " listening on " + bound.to_string());
      }
      fds[static_cast<std::size_t>(w)].push_back(fd);
    }
  }
  return true;
}

int Server::run() {
  std::string error;
  access_log_ = AccessLogSink::open(config_.access_log_path, error);
  if (!access_log_) {
    log_error(error);
    return 1;
  }
  std::vector<std::vector<int>> fds;
  if (!bind_listeners(fds)) return 1;

  warn_if_descriptors_short();

  std::vector<const WorkerStats*> views;
  for (int i = 0; i < config_.workers; ++i) {
    stats_.push_back(std::make_unique<WorkerStats>(config_));
    views.push_back(stats_.back().get());
  }
  process_stats_ = std::make_unique<ProcessStats>(config_.upstreams.size());
  process_stats_->access_log = access_log_.get();
  start_upstreams();
  std::vector<const UpstreamState*> upstream_views;
  std::vector<UpstreamState*> upstream_states;
  for (auto& u : upstreams_) {
    upstream_views.push_back(u.get());
    upstream_states.push_back(u.get());
  }
  collector_ = std::make_unique<StatsCollector>(config_, views, upstream_views, *process_stats_);
  std::vector<std::vector<RouteState*>> route_states;
  for (const auto& l : config_.listeners) {
    routes_.emplace_back();
    route_states.emplace_back();
    for (const auto& r : l.routes) {
      routes_.back().push_back(std::make_unique<RouteState>(r));
      route_states.back().push_back(routes_.back().back().get());
    }
  }

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
  handlers.config = [this] { return config_to_json(config_); };
  handlers.refused = [this] {
    process_stats_->admin_connections_refused.add();
    static LogThrottle throttle;
    throttle.log(LogLevel::warn,
                 "admin: " + std::to_string(config_.admin_max_connections) +
                     " connections open (admin.max_connections); closing a new one");
  };
  AdminLimits limits;
  limits.header_timeout_ms = config_.admin_header_timeout_ms;
  limits.idle_timeout_ms = config_.admin_idle_timeout_ms;
  limits.max_connections = config_.admin_max_connections;
  admin_ = std::make_unique<AdminServer>(&loop_, handlers, limits);
  if (!admin_->listen(config_.admin_address, error)) {
    log_error(error);
    for (auto& list : fds)
      for (int f : list) ::close(f);
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
  for (uv_signal_t* s : {&sigterm_, &sigint_, &sighup_, &sigusr1_}) {
    uv_signal_init(&loop_, s);
    s->data = this;
  }
  uv_signal_start(&sigterm_, on_signal, SIGTERM);
  uv_signal_start(&sigint_, on_signal, SIGINT);
  uv_signal_start(&sighup_, on_signal, SIGHUP);
  uv_signal_start(&sigusr1_, on_signal, SIGUSR1);
  std::signal(SIGPIPE, SIG_IGN);

  for (int i = 0; i < config_.workers; ++i) {
    workers_.push_back(std::make_unique<Worker>(i, config_, *stats_[static_cast<std::size_t>(i)],
                                                *access_log_, upstream_states, route_states,
                                                fds[static_cast<std::size_t>(i)], [this] {
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
  health_ = std::make_unique<HealthChecker>(&loop_, upstream_states);
  for (auto& u : upstreams_) {
    u->set_change_hook([this] {
      for (auto& w : workers_) w->endpoints_changed();
      health_->sync();  // probe new endpoints at once, stop probing removed ones
    });
    u->set_health_hook([this] {
      for (auto& w : workers_) w->health_changed();
    });
  }
  health_->sync();
  for (auto& w : workers_) w->start();
  started_ = true;
  log_info("bulwark " BULWARK_VERSION " started with " + std::to_string(config_.workers) +
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
  auto workers = static_cast<std::uint64_t>(config_.workers);
  for (const auto& l : config_.listeners) clients += l.max_connections * workers;  // per worker
  for (const auto& u : config_.upstreams) {
    upstream += u.pool.max_connections * u.endpoints.size();
    if (u.health_check) probes += u.endpoints.size();
  }
  // Per worker: its loop, wake-up and reserve descriptors, one listening socket per listener
  // and one Redis connection; then the admin listener, its connections, signals and logs.
  std::uint64_t fixed =
      workers * (6 + config_.listeners.size()) + config_.admin_max_connections + probes + 16;
  std::uint64_t need = clients + upstream + fixed;
  if (need <= files.rlim_cur) return;
  log_warn("file descriptor limit (RLIMIT_NOFILE) is " + std::to_string(files.rlim_cur) +
           ", but the configured limits may need " + std::to_string(need) + " (listeners' " +
           "max_connections " + std::to_string(clients) + " + upstream pools' max_connections " +
           std::to_string(upstream) + " + about " + std::to_string(fixed) +
           " of Bulwark's own); past the limit new connections are answered 503 overloaded. "
           "Raise the limit (ulimit -n, LimitNOFILE=) or lower max_connections.");
}

void Server::start_upstreams() {
  resolver_ = std::make_unique<UvResolver>(&loop_);
  for (const auto& uc : config_.upstreams) {
    upstreams_.push_back(std::make_unique<UpstreamState>(uc, config_.workers));
    auto r = std::make_unique<EndpointResolver>(
        *upstreams_.back(), *resolver_, &process_stats_->dns_lookups[upstreams_.size() - 1]);
    std::vector<std::string> errors;
    r->start(errors);
    for (const auto& e : errors) log_warn(e + " (retried every dns_refresh)");
    if (r->has_names()) {
      auto timer = std::make_unique<uv_timer_t>();
      uv_timer_init(&loop_, timer.get());
      timer->data = r.get();
      if (uv_timer_start(timer.get(), on_dns_timer, uc.dns_refresh_ms, uc.dns_refresh_ms) != 0)
        log_error("upstream " + uc.name + ": cannot start the DNS refresh timer");
      dns_timers_.push_back(std::move(timer));
    }
    endpoint_resolvers_.push_back(std::move(r));
  }
}

void Server::on_dns_timer(uv_timer_t* timer) {
  static_cast<EndpointResolver*>(timer->data)->refresh();
}

void Server::on_signal(uv_signal_t* handle, int signum) {
  auto* s = static_cast<Server*>(handle->data);
  if (signum == SIGTERM) {
    s->begin_drain();
  } else if (signum == SIGINT) {
    log_info("SIGINT: stopping");
    s->stop_workers();
  } else if (signum == SIGHUP) {
    log_warn("SIGHUP: configuration reload is not supported by this build yet; config unchanged");
  } else if (signum == SIGUSR1) {
    // logrotate renames the file, then signals: new lines go to a new file at the path.
    if (!s->access_log_->reopen())
      log_info("SIGUSR1: the access log is " + s->config_.access_log_path +
               ", not a file: nothing to reopen");
  }
}

void Server::begin_drain() {
  if (workers_draining_) return;
  if (draining_ || config_.drain_delay_ms == 0) {
    if (draining_) log_info("SIGTERM again: draining now");
    drain_workers();
    return;
  }
  draining_ = true;  // /ready: 503 from now on
  log_info("SIGTERM: /ready now answers 503; serving for " +
           std::to_string(config_.drain_delay_ms) + "ms (drain.delay), then draining");
  if (uv_timer_start(&delay_timer_, on_drain_delay, config_.drain_delay_ms, 0) != 0)
    drain_workers();
}

void Server::on_drain_delay(uv_timer_t* timer) { static_cast<Server*>(timer->data)->drain_workers(); }

void Server::drain_workers() {
  if (workers_draining_) return;
  draining_ = true;
  workers_draining_ = true;
  uv_timer_stop(&delay_timer_);
  log_info("draining: listeners closed, finishing requests in flight (timeout " +
           std::to_string(config_.drain_timeout_ms) + "ms)");
  for (auto& w : workers_) w->drain();
  if (uv_timer_start(&drain_timer_, on_drain_timeout, config_.drain_timeout_ms, 0) != 0)
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
  for (uv_signal_t* sig : {&sigterm_, &sigint_, &sighup_, &sigusr1_})
    uv_close(reinterpret_cast<uv_handle_t*>(sig), nullptr);
  for (auto& t : dns_timers_) uv_close(reinterpret_cast<uv_handle_t*>(t.get()), nullptr);
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
  out += ",\"workers\":" + std::to_string(workers_.size()) + ",\"upstreams\":[";
  for (std::size_t u = 0; u < upstreams_.size(); ++u) {
    const UpstreamState& state = *upstreams_[u];
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
      std::int64_t in_flight = 0, active = 0, idle = 0;
      for (int w = 0; w < config_.workers; ++w) {
        in_flight += ep.per_worker[w].in_flight.get();
        active += ep.per_worker[w].active.get();
        idle += ep.per_worker[w].idle.get();
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
      static const char* const kHealth[] = {"unknown", "healthy", "unhealthy"};
      std::string health =
          state.config().health_check
              ? std::string("\"") + kHealth[static_cast<int>(ep.health_state())] + "\""
              : "\"unchecked\"";
      out += ",\"health\":" + health + ",\"breaker\":" + breaker +
             ",\"in_flight\":" + std::to_string(in_flight) +
             ",\"pool\":{\"active\":" + std::to_string(active) +
             ",\"idle\":" + std::to_string(idle) + "}}";
    }
    out += "]}";
  }
  out += "],\"routes\":[";
  bool first = true;
  for (std::size_t li = 0; li < config_.listeners.size(); ++li) {
    const auto& l = config_.listeners[li];
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
      const RouteState& state = *routes_[li][ri];
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
  out += "]}";
  return out;
}

}  // namespace bulwark
