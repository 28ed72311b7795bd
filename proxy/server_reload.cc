// Configuration reload: SIGHUP, or the watcher saw the config file change. The new file is
// loaded and checked in full first; on any error nothing changes. Otherwise a new Generation
// is built (keeping the state of unchanged upstreams and routes), sockets are opened for new
// listeners, and every worker switches to it for new requests; requests in flight finish
// under the generation they began in.
#include <errno.h>
#include <malloc.h>
#include <unistd.h>

#include <memory>

#include "config/json.h"
#include "config/lint.h"
#include "config/loader.h"
#include "core/log.h"
#include "server.h"

namespace bulwark {

void Server::on_dns_timer(uv_timer_t* timer) {
  static_cast<EndpointResolver*>(timer->data)->refresh();
}

std::string Server::restart_needed(const Config& next) const {
  const Config& now = config();
  if (restart_json(next) == restart_json(now)) return "";
  std::vector<std::string> changed;
  if (next.workers != now.workers)
    changed.push_back("workers (" + std::to_string(now.workers) + " -> " +
                      std::to_string(next.workers) + ")");
  if (next.admin_listen != now.admin_listen ||
      next.admin_header_timeout_ms != now.admin_header_timeout_ms ||
      next.admin_idle_timeout_ms != now.admin_idle_timeout_ms ||
      next.admin_max_connections != now.admin_max_connections)
    changed.push_back("admin");
  if (next.access_log_path != now.access_log_path ||
      next.access_log_format != now.access_log_format)
    changed.push_back("access_log");
  if (next.redis != now.redis)
    changed.push_back("redis");
  std::string list;
  for (const auto& c : changed) list += (list.empty() ? "" : ", ") + c;
  return next.file + ": " + list + " changed; " + (changed.size() > 1 ? "these need" : "this needs") +
         " a restart (the file was not applied)";
}

void Server::reload_failed(const std::string& trigger, const std::vector<std::string>& errors) {
  process_stats_->reloads[1].add();
  if (process_stats_->last_reload_failed.get() == 0) process_stats_->last_reload_failed.add(1);
  last_error_ = errors.empty() ? "unknown error" : errors.front();
  log_error("config reload failed (" + trigger + "), still serving generation " +
            std::to_string(generation_->number) + ": " + std::to_string(errors.size()) +
            " error(s)");
  for (const auto& e : errors) log_error(e);
  history_.add_event(wall_ms(), "reload", "config", "generation " + std::to_string(generation_->number),
                     "failed: " + last_error_);
}

// A reload's reading and parsing, done on libuv's thread pool so that a large file never
// holds up the main loop (admin endpoints, signals, health checks, DNS).
struct Server::LoadJob {
  uv_work_t req{};
  Server* server = nullptr;
  bool from_watch = false;
  std::string trigger;  // for the log
  std::string file;
  std::string last;         // the fingerprint last acted on: unchanged -> not parsed
  std::string fingerprint;  // the bytes read, or the read error
  bool read_ok = false;
  bool blank = false;  // missing or empty: a file being replaced or written
  bool transient = false;  // unreadable for want of descriptors or memory: read it again
  bool unchanged = false;
  LoadResult loaded;
};

void Server::reload(bool from_watch, const char* why) {
  const std::string trigger = from_watch ? "file changed" : why ? why : "SIGHUP";
  if (draining_ || finished_) {
    log_info("config reload (" + trigger + ") ignored: draining");
    return;
  }
  if (loading_) {  // one at a time; a trigger meanwhile runs once more after it
    again_ = true;
    again_from_watch_ = again_from_watch_ && from_watch;
    if (!from_watch && why) again_why_ = why;
    return;
  }
  auto* job = new LoadJob;
  job->req.data = job;
  job->server = this;
  job->from_watch = from_watch;
  job->trigger = trigger;
  job->file = config().file;
  if (from_watch) job->last = last_fingerprint_;
  loading_ = true;
  int rc = uv_queue_work(
      &loop_, &job->req,
      [](uv_work_t* req) {
        auto* j = static_cast<LoadJob*>(req->data);
        std::string text, error;
        int error_number = 0;
        j->read_ok = read_config_file(j->file, text, error, &error_number);
        j->fingerprint = j->read_ok ? text : std::string("\0", 1) + error;
        j->blank = j->read_ok ? text.find_first_not_of(" \t\r\n") == std::string::npos
                              : error_number == ENOENT;
        j->transient = !j->read_ok && (error_number == EMFILE || error_number == ENFILE ||
                                       error_number == ENOMEM);
        if (j->from_watch && !j->transient && j->fingerprint == j->last) {
          j->unchanged = true;
          return;
        }
        if (!j->read_ok)
          j->loaded.errors.push_back(j->file + ":0:0: (root): " + error);
        else if (j->blank)
          j->loaded.errors.push_back(j->file + ":0:0: (root): the file is empty");
        else
          j->loaded = load_config_string(text, j->file);
        // A parse can take far more memory than the file; give it back to the system.
        malloc_trim(0);
      },
      [](uv_work_t* req, int) {
        std::unique_ptr<LoadJob> j(static_cast<LoadJob*>(req->data));
        Server* s = j->server;
        s->loading_ = false;
        if (!s->finished_) s->apply_reload(*j);
        if (s->again_ && !s->finished_) {
          bool watch_only = s->again_from_watch_;
          std::string again_why = std::move(s->again_why_);
          s->again_ = false;
          s->again_from_watch_ = true;
          s->again_why_.clear();
          s->reload(watch_only, again_why.empty() ? nullptr : again_why.c_str());
        }
      });
  if (rc != 0) {
    loading_ = false;
    delete job;
    reload_failed(trigger, {config().file + ": cannot start loading: " + uv_strerror(rc)});
  }
}

void Server::apply_reload(LoadJob& job) {
  const std::string& trigger = job.trigger;
  if (draining_) return;
  const std::string& file = config().file;
  if (job.transient) {
    // Bulwark's own shortage, not the file's: a SIGHUP is told it failed; either way the file
    // is read again shortly (no event would come: the file has not changed), and what it
    // holds then is applied as usual.
    if (!job.from_watch) reload_failed(trigger, job.loaded.errors);
    static LogThrottle throttle(10000);
    throttle.log(LogLevel::warn, file + ": cannot be read now (" + job.loaded.errors.front() +
                                     "); reading it again shortly");
    if (watcher_) watcher_->poke();
    return;
  }
  if (job.from_watch) {
    if (job.unchanged || job.fingerprint == last_fingerprint_) {
      settling_.reset();  // back to what is in effect: nothing to do
      return;
    }
    if (job.blank) {
      // Missing or empty: a file being replaced, or truncated before it is written. Not a
      // refusal yet: the write that follows is an event of its own (SIGHUP says otherwise).
      static LogThrottle throttle(60000);
      throttle.log(LogLevel::warn, file + ": missing or empty; the config in effect stays, "
                                          "waiting for the file to be written");
      settling_.reset();
      return;
    }
    // A writer can be caught half way: act on what has held still for one more period.
    if (!settling_ || *settling_ != job.fingerprint) {
      settling_ = job.fingerprint;
      if (watcher_) watcher_->poke();
      return;
    }
  }
  settling_.reset();
  last_fingerprint_ = job.fingerprint;
  LoadResult& loaded = job.loaded;
  if (!loaded.config) return reload_failed(trigger, loaded.errors);
  Config& next = *loaded.config;
  if (std::string why = restart_needed(next); !why.empty()) return reload_failed(trigger, {why});

  // Listeners: one with the same address as a listener now open keeps its sockets and its
  // connections (a listener on port 0 only under the same name: its port is not the one asked
  // for); new addresses are bound now, so that a failure changes nothing.
  const Config& now = config();
  const auto workers = static_cast<std::size_t>(now.workers);
  std::vector<std::vector<int>> fds(workers);  // [worker][listener]
  std::vector<std::string> keep;
  std::vector<Address> bound;
  std::vector<bool> kept_old(now.listeners.size(), false);
  ReloadSummary summary;
  bool failed = false;
  for (const auto& l : next.listeners) {
    int match = -1;
    for (std::size_t o = 0; o < now.listeners.size() && match < 0; ++o) {
      const ListenerConfig& old = now.listeners[o];
      if (kept_old[o] || old.address.to_string() != l.address.to_string()) continue;
      if (l.address.port() != 0 || old.name == l.name) match = static_cast<int>(o);
    }
    if (match >= 0) {
      kept_old[static_cast<std::size_t>(match)] = true;
      keep.push_back(now.listeners[static_cast<std::size_t>(match)].name);
      bound.push_back(bound_[static_cast<std::size_t>(match)]);
      for (auto& f : fds) f.push_back(-1);
      continue;
    }
    std::vector<int> opened;
    Address got;
    if (!failed && bind_listener(l, opened, got)) {
      keep.emplace_back();
      bound.push_back(got);
      for (std::size_t w = 0; w < workers; ++w) fds[w].push_back(opened[w]);
      ++summary.listeners_added;
    } else {
      failed = true;
      for (auto& f : fds) f.push_back(-1);
    }
  }
  if (failed) {
    for (auto& list : fds)
      for (int f : list)
        if (f >= 0) ::close(f);
    return reload_failed(trigger, {file + ": a new listener could not be opened (see above)"});
  }
  for (bool k : kept_old) summary.listeners_removed += k ? 0 : 1;

  auto config = std::make_shared<const Config>(std::move(next));
  generation_ = build_generation(config, generation_.get(), *registry_, &summary);
  bound_ = std::move(bound);
  sync_upstreams();
  collector_->set_generation(generation_);
  for (std::size_t w = 0; w < workers_.size(); ++w)
    workers_[w]->reload(generation_, std::move(fds[w]), keep);
  process_stats_->reloads[0].add();
  process_stats_->last_reload_failed.add(-process_stats_->last_reload_failed.get());
  last_error_.clear();
  history_.add_event(wall_ms(), "reload", "config",
                     "generation " + std::to_string(generation_->number - 1),
                     "generation " + std::to_string(generation_->number));
  log_info("config reloaded (" + trigger + "): generation " + std::to_string(generation_->number) +
           "; " + summary.text());
  for (const auto& w : lint_config(*config)) log_warn("config warning: " + w);
  sync_tls_watchers();
}

void Server::on_tls_timer(uv_timer_t* timer) {
  static_cast<Server*>(timer->data)->reload(false, "certificate files changed");
}

void Server::sync_tls_watchers() {
  std::map<std::string, std::unique_ptr<ConfigWatcher>> next;
  for (const auto& l : config().listeners) {
    if (!l.tls) continue;
    for (const std::string* file : {&l.tls->cert, &l.tls->key, &l.tls->client_ca}) {
      if (file->empty() || next.count(*file)) continue;
      auto found = tls_watchers_.find(*file);
      if (found != tls_watchers_.end()) {
        next[*file] = std::move(found->second);
        continue;
      }
      auto w = std::make_unique<ConfigWatcher>(&loop_, *file, 200, [this] {
        if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&tls_timer_)))
          uv_timer_start(&tls_timer_, on_tls_timer, 50, 0);
      });
      std::string error;
      if (!w->start(error)) {
        log_warn(error + "; a new certificate in " + *file + " takes effect on SIGHUP");
        continue;
      }
      next[*file] = std::move(w);
    }
  }
  for (auto& [file, w] : tls_watchers_)
    if (w) w->close();
  tls_watchers_ = std::move(next);
}

void Server::sync_upstreams() {
  std::vector<UpstreamRuntime> next;
  std::vector<UpstreamState*> states;
  for (const auto& state : generation_->upstreams) {
    states.push_back(state.get());
    UpstreamRuntime runtime;
    for (auto& old : upstream_runtimes_)
      if (old.state == state) runtime = std::move(old);
    if (!runtime.state) {
      runtime.state = state;
      runtime.resolver = std::make_unique<EndpointResolver>(*state, *resolver_, &state->dns_lookups());
      std::vector<std::string> errors;
      runtime.resolver->start(errors);
      for (const auto& e : errors) log_warn(e + " (retried every dns_refresh)");
      if (runtime.resolver->has_names()) {
        runtime.timer = new uv_timer_t;
        uv_timer_init(&loop_, runtime.timer);
        runtime.timer->data = runtime.resolver.get();
        std::uint64_t every = state->config().dns_refresh_ms;
        if (uv_timer_start(runtime.timer, on_dns_timer, every, every) != 0)
          log_error("upstream " + state->config().name + ": cannot start the DNS refresh timer");
      }
      state->set_change_hook([this] {
        for (auto& w : workers_) w->endpoints_changed();
        health_->sync();  // probe new endpoints at once, stop probing removed ones
      });
      state->set_health_hook([this] {
        for (auto& w : workers_) w->health_changed();
      });
    }
    next.push_back(std::move(runtime));
  }
  // Upstreams that are gone: no more refreshes; a resolver with lookups out is kept until they
  // have answered (their callbacks use it).
  for (auto& old : upstream_runtimes_) {
    if (!old.state) continue;
    if (old.timer) {
      uv_close(reinterpret_cast<uv_handle_t*>(old.timer),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
      old.timer = nullptr;
    }
    if (old.resolver && old.resolver->busy()) retired_resolvers_.push_back(std::move(old));
  }
  for (std::size_t i = 0; i < retired_resolvers_.size();) {
    if (!retired_resolvers_[i].resolver->busy()) {
      retired_resolvers_.erase(retired_resolvers_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
  upstream_runtimes_ = std::move(next);
  health_->set_upstreams(std::move(states));
  health_->sync();
}

}  // namespace bulwark
