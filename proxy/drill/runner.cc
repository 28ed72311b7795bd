#include "drill/runner.h"

#include <strings.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <random>

#include "drill/http_get.h"
#include "drill/metrics.h"
#include "drill/objectives.h"

namespace bulwark::drill {
namespace {

constexpr std::uint64_t kScrapeTimeoutMs = 900;
constexpr std::uint64_t kActionTimeoutMs = 5000;    // a GET action, unless it says otherwise
constexpr std::uint64_t kCommandTimeoutMs = 30000;  // a command (run:), unless it says otherwise

std::size_t pick(std::mt19937_64& rng, const std::vector<double>& cumulative) {
  if (cumulative.size() <= 1 || cumulative.back() <= 0) return 0;
  double x = std::uniform_real_distribution<double>(0, cumulative.back())(rng);
  auto it = std::upper_bound(cumulative.begin(), cumulative.end(), x);
  return std::min<std::size_t>(static_cast<std::size_t>(it - cumulative.begin()), cumulative.size() - 1);
}

std::vector<double> cumulative(const std::vector<double>& weights) {
  std::vector<double> out;
  double total = 0;
  for (double w : weights) out.push_back(total += w);
  return out;
}

std::vector<std::string> priority_names(const Scenario& s) {
  std::vector<std::string> names;
  for (const auto& [name, weight] : s.priority_mix) names.push_back(name);
  return names;
}

std::string format_seconds(std::uint64_t ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", static_cast<double>(ms) / 1000);
  return buf;
}

std::string iso_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// One run's state on its own loop.
class Run {
 public:
  Run(const Scenario& s, Report& report, std::FILE* progress)
      : s_(s), report_(report), progress_(progress) {}

  bool prepare(std::string& error) {
    if (!resolve(s_.target.host, s_.target.port, target_, error)) return false;
    if (s_.metrics && !resolve(s_.metrics->host, s_.metrics->port, metrics_, error)) return false;
    for (const Fault& f : s_.faults)
      for (const Action* a : {&f.start, &f.end})
        if (a->get && !resolve(a->get->host, a->get->port, action_addr_[a], error)) return false;
    return true;
  }

  void run() {
    uv_loop_init(&loop_);
    records_ = build_schedule(s_);
    LoadGenerator::Options options;
    options.address = target_;
    options.timeout_s = s_.timeout_s;
    options.max_connections = s_.connections;
    gen_ = std::make_unique<LoadGenerator>(&loop_, options, records_, build_requests(s_),
                                           std::max<std::size_t>(s_.priority_mix.size(), 1),
                                           s_.key_header, s_.key_count);
    seconds_ = static_cast<std::size_t>(std::ceil(s_.duration_s()));
    for (const ControlSpec& chart : s_.controls)
      for (const ControlSeries& cs : chart.series) metric_names_.insert(cs.metric);
    uv_timer_init(&loop_, &second_);
    second_.data = this;
    uv_signal_init(&loop_, &sigint_);
    sigint_.data = this;
    uv_signal_start(&sigint_, [](uv_signal_t* h, int) {
      auto* self = static_cast<Run*>(h->data);
      if (self->progress_) std::fprintf(self->progress_, "interrupted: ending the run\n");
      self->interrupted_ = true;
      self->gen_->stop_scheduling();
    }, SIGINT);
    for (const Fault& f : s_.faults) schedule_fault(f);
    report_.started_at = iso_now();
    start_ns_ = uv_hrtime();
    uv_timer_start(&second_, [](uv_timer_t* t) { static_cast<Run*>(t->data)->on_second(); }, 0, 1000);
    gen_->start(start_ns_, [this] { on_load_done(); });
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
    gen_.reset();
    summarize(s_, records_, reasons_, report_);
    report_.max_start_lag_us = max_lag_us_;
    report_.scraped = s_.metrics.has_value();
    report_.scrape_errors = scrape_errors_;
    build_controls();
    for (ObjectiveResult& r : action_failures_) report_.objectives.push_back(r);
    for (const ObjectiveResult& r : report_.objectives) report_.passed = report_.passed && r.passed;
    if (interrupted_) {
      report_.objectives.push_back({"the run was not interrupted", std::nan(""), false,
                                    "stopped by SIGINT before the schedule ended"});
      report_.passed = false;
    }
  }

 private:
  struct FaultTimers {
    const Fault* fault;
    uv_timer_t start{}, end{};
    bool started = false, ended = false;
    Run* run;
  };

  double now_s() const { return static_cast<double>(uv_hrtime() - start_ns_) / 1e9; }

  void schedule_fault(const Fault& f) {
    auto ft = std::make_unique<FaultTimers>();
    ft->fault = &f;
    ft->run = this;
    uv_timer_init(&loop_, &ft->start);
    uv_timer_init(&loop_, &ft->end);
    ft->start.data = ft->end.data = ft.get();
    uv_timer_start(&ft->start, [](uv_timer_t* t) {
      auto* x = static_cast<FaultTimers*>(t->data);
      x->started = true;
      x->run->act(*x->fault, x->fault->start, "start");
    }, static_cast<std::uint64_t>(f.at_s * 1000), 0);
    uv_timer_start(&ft->end, [](uv_timer_t* t) {
      auto* x = static_cast<FaultTimers*>(t->data);
      x->run->end_fault(*x);
    }, static_cast<std::uint64_t>((f.at_s + f.duration_s) * 1000), 0);
    faults_.push_back(std::move(ft));
  }

  void end_fault(FaultTimers& x) {
    if (x.ended) return;
    x.ended = true;
    uv_timer_stop(&x.end);
    if (x.started && !x.fault->end.empty()) act(*x.fault, x.fault->end, "end");
    maybe_close();
  }

  void act(const Fault& f, const Action& a, const char* which) {
    if (progress_) std::fprintf(progress_, "%6.1f s  fault '%s' %s: %s\n", now_s(), f.name.c_str(), which, a.describe().c_str());
    std::string text = "fault '" + f.name + "' " + which + " (" + a.describe() + ")";
    ++actions_running_;
    std::uint64_t timeout_ms = a.timeout_s > 0 ? static_cast<std::uint64_t>(a.timeout_s * 1000)
                               : a.get        ? kActionTimeoutMs
                                              : kCommandTimeoutMs;
    if (a.get) {
      http_get(&loop_, action_addr_[&a], *a.get, timeout_ms,
               [this, text](int status, std::string, std::string error) {
                 if (status < 200 || status >= 300)
                   action_failures_.push_back({text, std::nan(""), false,
                                               status ? "answered " + std::to_string(status) : error});
                 --actions_running_;
                 maybe_close();
               });
      return;
    }
    auto* p = new Spawned{this, text, timeout_ms};
    p->process.data = p->timer.data = p;
    const char* args[] = {"/bin/sh", "-c", a.run.c_str(), nullptr};
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_INHERIT_FD;
    stdio[1].data.fd = 2;  // the command's output goes to stderr, not into the summary
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    uv_process_options_t opt{};
    opt.file = "/bin/sh";
    opt.args = const_cast<char**>(args);
    opt.stdio_count = 3;
    opt.stdio = stdio;
    opt.flags = UV_PROCESS_DETACHED;  // a process group of its own, killed whole on a timeout
    opt.exit_cb = [](uv_process_t* proc, std::int64_t status, int signal) {
      auto* sp = static_cast<Spawned*>(proc->data);
      if (sp->timed_out)
        sp->run->action_failures_.push_back(
            {sp->text, std::nan(""), false,
             "no exit within " + format_seconds(sp->timeout_ms) + ": killed"});
      else if (status != 0 || signal != 0)
        sp->run->action_failures_.push_back(
            {sp->text, std::nan(""), false,
             signal ? "killed by signal " + std::to_string(signal) : "exit status " + std::to_string(status)});
      sp->close();
    };
    uv_timer_init(&loop_, &p->timer);
    int rc = uv_spawn(&loop_, &p->process, &opt);
    if (rc != 0) {
      action_failures_.push_back({text, std::nan(""), false, std::string("cannot start: ") + uv_strerror(rc)});
      p->close();
      return;
    }
    uv_timer_start(&p->timer, [](uv_timer_t* t) {
      auto* sp = static_cast<Spawned*>(t->data);
      sp->timed_out = true;
      if (sp->run->progress_)
        std::fprintf(sp->run->progress_, "%6.1f s  %s: no exit within %s, killed\n", sp->run->now_s(),
                     sp->text.c_str(), format_seconds(sp->timeout_ms).c_str());
      uv_kill(-sp->process.pid, SIGKILL);  // the exit callback follows
    }, timeout_ms, 0);
  }

  // A running command: its process and its timeout, freed once both handles are closed.
  struct Spawned {
    Run* run;
    std::string text;
    std::uint64_t timeout_ms;
    uv_process_t process{};
    uv_timer_t timer{};
    bool timed_out = false;
    int handles = 2;

    void close() {
      auto on_close = [](uv_handle_t* h) {
        auto* sp = static_cast<Spawned*>(h->data);
        if (--sp->handles > 0) return;
        Run* r = sp->run;
        delete sp;
        --r->actions_running_;
        r->maybe_close();
      };
      uv_close(reinterpret_cast<uv_handle_t*>(&process), on_close);
      uv_close(reinterpret_cast<uv_handle_t*>(&timer), on_close);
    }
  };

  void on_second() {
    double t = now_s();
    if (progress_ && t > 0.5) {
      std::fprintf(progress_, "%6.1f s  %zu connections open\n", t, gen_->open_connections());
    }
    scrape(t);
  }

  void scrape(double t) {
    if (!s_.metrics) return;
    if (scraping_) {
      ++scrape_errors_;
      return;
    }
    scraping_ = true;
    http_get(&loop_, metrics_, *s_.metrics, kScrapeTimeoutMs,
             [this, t](int status, std::string body, std::string) {
               scraping_ = false;
               if (status != 200) {
                 ++scrape_errors_;
               } else {
                 std::vector<Sample> samples = parse_prometheus(body, &metric_names_);
                 std::vector<double> values;
                 for (const ControlSpec& chart : s_.controls)
                   for (const ControlSeries& cs : chart.series) values.push_back(evaluate(cs, samples));
                 scrapes_.emplace_back(t, std::move(values));
               }
               maybe_close();
             });
  }

  void on_load_done() {
    max_lag_us_ = gen_->max_start_lag_us();
    reasons_ = gen_->reasons();
    uv_timer_stop(&second_);
    scrape(now_s());  // the state at the end of the last second
    for (auto& ft : faults_) {
      uv_timer_stop(&ft->start);
      end_fault(*ft);  // a fault still on is ended now: a drill leaves the system as it found it
    }
    load_done_ = true;  // only now: nothing is closed while the faults above are being ended
    maybe_close();
  }

  // Once the load, the last scrape and every fault action are done, close every handle.
  void maybe_close() {
    if (!load_done_ || scraping_ || actions_running_ > 0 || closed_) return;
    closed_ = true;
    gen_->shutdown();
    uv_close(reinterpret_cast<uv_handle_t*>(&second_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
    for (auto& ft : faults_) {
      uv_close(reinterpret_cast<uv_handle_t*>(&ft->start), nullptr);
      uv_close(reinterpret_cast<uv_handle_t*>(&ft->end), nullptr);
    }
  }

  // Scrapes -> per-second series: a gauge's value for second k is the scrape nearest the end
  // of that second; a counter's is its increase from the scrape nearest k to the one nearest
  // k + 1, per second.
  void build_controls() {
    if (!s_.metrics) return;
    std::vector<std::vector<double>> at(seconds_ + 1);
    std::vector<double> when(seconds_ + 1, std::nan(""));
    for (const auto& [t, values] : scrapes_) {
      auto k = static_cast<std::size_t>(std::llround(std::max(0.0, t)));
      if (k > seconds_) k = seconds_;
      if (at[k].empty() || std::fabs(t - static_cast<double>(k)) < std::fabs(when[k] - static_cast<double>(k))) {
        at[k] = values;
        when[k] = t;
      }
    }
    std::size_t index = 0;
    for (const ControlSpec& chart : s_.controls) {
      ControlChart out;
      out.title = chart.title;
      out.unit = chart.unit;
      for (const ControlSeries& cs : chart.series) {
        Series series;
        series.name = cs.name;
        series.values.assign(seconds_, std::nan(""));
        bool any = false;
        for (std::size_t k = 0; k < seconds_; ++k) {
          const auto& end = at[k + 1];
          if (end.empty()) continue;
          double v = end[index];
          if (cs.rate) {
            const auto& begin = at[k];
            if (begin.empty() || std::isnan(begin[index]) || std::isnan(v)) continue;
            double dt = when[k + 1] - when[k];
            v = dt > 0.2 && v >= begin[index] ? (v - begin[index]) / dt : std::nan("");
          }
          series.values[k] = v;
          any = any || !std::isnan(v);
        }
        ++index;
        if (any) out.series.push_back(std::move(series));
      }
      if (!out.series.empty()) report_.controls.push_back(std::move(out));
    }
  }

  const Scenario& s_;
  Report& report_;
  std::FILE* progress_;
  uv_loop_t loop_{};
  uv_timer_t second_{};
  uv_signal_t sigint_{};
  sockaddr_storage target_{}, metrics_{};
  std::map<const Action*, sockaddr_storage> action_addr_;
  std::vector<Record> records_;
  std::unique_ptr<LoadGenerator> gen_;
  std::vector<std::unique_ptr<FaultTimers>> faults_;
  std::vector<std::pair<double, std::vector<double>>> scrapes_;
  std::set<std::string, std::less<>> metric_names_;  // the metrics the control charts draw
  std::vector<ObjectiveResult> action_failures_;
  std::vector<std::string> reasons_;
  std::uint64_t start_ns_ = 0, scrape_errors_ = 0;
  std::int64_t max_lag_us_ = 0;
  std::size_t seconds_ = 0;
  int actions_running_ = 0;
  bool scraping_ = false, load_done_ = false, closed_ = false, interrupted_ = false;
};

}  // namespace

std::vector<Record> build_schedule(const Scenario& s) {
  std::vector<Record> out;
  std::mt19937_64 rng(s.seed);
  std::vector<double> prio_weights, path_weights;
  for (const auto& [name, weight] : s.priority_mix) prio_weights.push_back(weight);
  for (const WeightedPath& p : s.paths) path_weights.push_back(p.weight);
  std::vector<double> prio_cum = cumulative(prio_weights), path_cum = cumulative(path_weights);
  double phase_start = 0;
  for (const Phase& p : s.phases) {
    // Requests due by time t into the phase: N(t) = r0 t + (r1 - r0) t^2 / (2 D); request k
    // of the phase starts where N(t) = k.
    double a = (p.rate_to - p.rate) / (2 * p.duration_s), b = p.rate;
    for (std::uint64_t k = 0;; ++k) {
      double kk = static_cast<double>(k), t;
      if (std::fabs(a) < 1e-12) {
        if (b <= 0) break;
        t = kk / b;
      } else {
        double disc = b * b + 4 * a * kk;
        if (disc < 0) break;
        t = (-b + std::sqrt(disc)) / (2 * a);
      }
      if (!(t < p.duration_s)) break;
      Record r;
      r.sched_ns = static_cast<std::uint64_t>(std::llround((phase_start + t) * 1e9));
      r.priority = static_cast<std::uint8_t>(pick(rng, prio_cum));
      r.path = static_cast<std::uint8_t>(pick(rng, path_cum));
      out.push_back(r);
    }
    phase_start += p.duration_s;
  }
  return out;
}

std::vector<std::string> build_requests(const Scenario& s) {
  std::vector<std::string> paths;
  for (const WeightedPath& p : s.paths) paths.push_back(p.path);
  if (paths.empty()) paths.push_back(s.target.path);
  std::vector<std::string> prios = priority_names(s);
  std::string host = s.target.host.find(':') != std::string::npos ? "[" + s.target.host + "]" : s.target.host;
  bool own_host = false;  // a Host among the scenario's headers replaces the target's
  for (const auto& [name, value] : s.headers) own_host = own_host || strcasecmp(name.c_str(), "host") == 0;
  std::string common = own_host ? "" : "Host: " + host + ":" + std::to_string(s.target.port) + "\r\n";
  common += "User-Agent: bulwark-drill\r\n";
  for (const auto& [name, value] : s.headers) common += name + ": " + value + "\r\n";
  std::vector<std::string> out;
  for (const std::string& path : paths) {
    if (prios.empty()) {
      out.push_back("GET " + path + " HTTP/1.1\r\n" + common);
      continue;
    }
    for (const std::string& prio : prios)
      out.push_back("GET " + path + " HTTP/1.1\r\n" + common + s.priority_header + ": " + prio + "\r\n");
  }
  return out;
}

bool run_scenario(const Scenario& s, Report& report, std::string& error, std::FILE* progress) {
  report = Report{};
  report.scenario = s.name;
  report.description = s.description;
  report.file = s.file;
  report.target = s.target.text;
  report.duration_s = s.duration_s();
  double t = 0;
  for (const Phase& p : s.phases) {
    report.phases.push_back({p.name, t, t + p.duration_s});
    t += p.duration_s;
  }
  for (const Fault& f : s.faults) report.faults.push_back({f.name, f.at_s, f.at_s + f.duration_s});
  Run run(s, report, progress);
  if (!run.prepare(error)) return false;
  run.run();
  return true;
}

void summarize(const Scenario& s, const std::vector<Record>& records,
               const std::vector<std::string>& reasons, Report& report) {
  auto seconds = static_cast<std::size_t>(std::ceil(s.duration_s()));
  if (seconds == 0) return;
  report.offered.assign(seconds, 0);
  for (auto& v : report.outcomes) v.assign(seconds, 0);
  std::vector<std::vector<std::uint32_t>> ok_lat(seconds);
  std::vector<std::string> prios = priority_names(s);
  std::vector<PrioritySummary> per(prios.size() + 1);
  std::vector<std::vector<std::uint32_t>> per_lat(prios.size() + 1);
  per[0].name = "all";
  for (std::size_t i = 0; i < prios.size(); ++i) per[i + 1].name = prios[i];
  std::map<int, std::uint64_t> statuses;
  std::map<std::string, std::uint64_t> reason_counts;
  std::uint64_t answered_in_window = 0;
  for (const Record& r : records) {
    auto sec = std::min<std::size_t>(static_cast<std::size_t>(r.sched_ns / 1'000'000'000ull), seconds - 1);
    auto o = static_cast<std::size_t>(r.outcome);
    report.offered[sec] += 1;
    report.outcomes[o][sec] += 1;
    if (r.outcome == Outcome::ok) ok_lat[sec].push_back(r.latency_us);
    for (std::size_t idx : {std::size_t{0}, prios.empty() ? SIZE_MAX : std::size_t{r.priority} + 1u}) {
      if (idx >= per.size()) continue;
      per[idx].counts[o] += 1;
      if (r.outcome != Outcome::overflow) per[idx].sent += 1;
      if (r.outcome == Outcome::ok) per_lat[idx].push_back(r.latency_us);
    }
    if (r.outcome != Outcome::overflow) statuses[r.status] += 1;
    if (r.reason != 0 && r.reason < reasons.size()) reason_counts[reasons[r.reason]] += 1;
    if (r.status != 0 && static_cast<double>(r.sched_ns) / 1e9 + r.latency_us / 1e6 <= s.duration_s())
      ++answered_in_window;
  }
  report.p50_ms.assign(seconds, std::nan(""));
  report.p99_ms.assign(seconds, std::nan(""));
  report.max_ms.assign(seconds, std::nan(""));
  for (std::size_t k = 0; k < seconds; ++k) {
    std::sort(ok_lat[k].begin(), ok_lat[k].end());
    report.p50_ms[k] = percentile(ok_lat[k], 0.5) / 1000;
    report.p99_ms[k] = percentile(ok_lat[k], 0.99) / 1000;
    report.max_ms[k] = percentile(ok_lat[k], 1.0) / 1000;
  }
  for (std::size_t i = 0; i < per.size(); ++i) {
    std::sort(per_lat[i].begin(), per_lat[i].end());
    std::uint64_t scheduled = per[i].sent + per[i].counts[static_cast<int>(Outcome::overflow)];
    per[i].success_ratio = scheduled ? static_cast<double>(per[i].counts[0]) / static_cast<double>(scheduled)
                                     : std::nan("");
    per[i].latency = {percentile(per_lat[i], 0.5) / 1000, percentile(per_lat[i], 0.9) / 1000,
                      percentile(per_lat[i], 0.99) / 1000, percentile(per_lat[i], 0.999) / 1000,
                      percentile(per_lat[i], 1.0) / 1000};
  }
  report.priorities = std::move(per);
  for (const auto& [status, count] : statuses) report.statuses.emplace_back(std::to_string(status), count);
  for (const auto& [reason, count] : reason_counts) report.reasons.emplace_back(reason, count);
  double duration = s.duration_s();
  report.offered_rate_avg = duration > 0 ? static_cast<double>(records.size()) / duration : 0;
  report.achieved_rate = duration > 0 ? static_cast<double>(answered_in_window) / duration : 0;
  report.objectives.clear();
  for (const Objective& o : s.objectives) report.objectives.push_back(judge(o, s, records, prios));
}

}  // namespace bulwark::drill
