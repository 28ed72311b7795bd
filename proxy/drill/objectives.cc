#include "drill/objectives.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace bulwark::drill {
namespace {

struct Window {
  double from_s = 0, to_s = 0;
};

Window window_of(const Objective& o, const Scenario& s) {
  Window w{0, s.duration_s()};
  double t = 0;
  for (const Phase& p : s.phases) {
    if (p.name == o.phase) return {t, t + p.duration_s};
    t += p.duration_s;
  }
  return w;
}

std::string num(double v, int precision = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", precision, v);
  return buf;
}

std::string count_text(std::uint64_t v) { return group_thousands(std::to_string(v)); }

}  // namespace

double percentile(const std::vector<std::uint32_t>& sorted, double q) {
  if (sorted.empty()) return std::nan("");
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  rank = std::clamp<std::size_t>(rank, 1, sorted.size());
  return static_cast<double>(sorted[rank - 1]);
}

ObjectiveResult judge(const Objective& o, const Scenario& s, const std::vector<Record>& records,
                      const std::vector<std::string>& priorities) {
  ObjectiveResult r;
  r.text = o.text;
  int prio = -1;
  for (std::size_t i = 0; i < priorities.size(); ++i)
    if (!o.priority.empty() && priorities[i] == o.priority) prio = static_cast<int>(i);
  Window w = window_of(o, s);
  auto in_filter = [&](const Record& rec) {
    double t = static_cast<double>(rec.sched_ns) / 1e9;
    return t >= w.from_s && t < w.to_s && (prio < 0 || rec.priority == prio);
  };

  double measured = std::nan("");
  if (o.metric == "recovery_s") {
    const Fault* fault = nullptr;
    for (const Fault& f : s.faults)
      if (f.name == o.fault) fault = &f;
    double end = fault ? fault->at_s + fault->duration_s : 0;
    auto seconds = static_cast<std::size_t>(std::ceil(s.duration_s()));
    std::vector<std::uint64_t> all(seconds, 0), ok(seconds, 0);
    for (const Record& rec : records) {
      if (prio >= 0 && rec.priority != prio) continue;
      auto sec = static_cast<std::size_t>(rec.sched_ns / 1'000'000'000ull);
      if (sec >= seconds) continue;
      ++all[sec];
      if (rec.outcome == Outcome::ok) ++ok[sec];
    }
    auto good = [&](std::size_t sec) {
      return all[sec] == 0 || static_cast<double>(ok[sec]) >= o.threshold * static_cast<double>(all[sec]);
    };
    // The hold is cut short by the next fault: what happens then is that fault's doing.
    double next = s.duration_s();
    for (const Fault& f : s.faults)
      if (f.at_s >= end && f.at_s < next) next = f.at_s;
    auto limit = std::min(seconds, static_cast<std::size_t>(std::floor(next)));
    auto hold = static_cast<std::size_t>(std::max(1.0, std::ceil(o.hold_s)));
    for (auto sec = static_cast<std::size_t>(std::floor(end)); sec < limit; ++sec) {
      bool held = true;
      for (std::size_t k = sec; k < std::min(limit, sec + hold) && held; ++k) held = good(k);
      if (held && all[sec] > 0) {
        measured = std::max(0.0, static_cast<double>(sec) - end);
        break;
      }
    }
    if (std::isnan(measured))
      r.detail = "the per-second success ratio never stayed >= " + num(o.threshold) + " for " +
                 num(o.hold_s) + " s after '" + o.fault + "' ended (at " + num(end) + " s)" +
                 (next < s.duration_s() ? ", before the next fault (at " + num(next) + " s)" : "");
    else
      r.detail = "success ratio back to >= " + num(o.threshold) + " " + num(measured, 3) +
                 " s after the fault ended";
  } else if (o.metric.size() > 3 && o.metric.compare(o.metric.size() - 3, 3, "_ms") == 0) {
    std::vector<std::uint32_t> lat;
    for (const Record& rec : records)
      if (in_filter(rec) && rec.outcome == Outcome::ok) lat.push_back(rec.latency_us);
    std::sort(lat.begin(), lat.end());
    double q = o.metric == "p50_ms" ? 0.5 : o.metric == "p90_ms" ? 0.9 : o.metric == "p99_ms" ? 0.99
             : o.metric == "p999_ms" ? 0.999 : 1.0;
    measured = percentile(lat, q) / 1000;
    r.detail = lat.empty() ? "no successful request to measure"
                           : "of " + count_text(lat.size()) + " successful requests";
  } else {
    std::uint64_t scheduled = 0, ok = 0, matching = 0, answered = 0;
    for (const Record& rec : records) {
      if (!in_filter(rec)) continue;
      ++scheduled;
      if (rec.outcome == Outcome::ok) ++ok;
      if (o.outcome && rec.outcome == *o.outcome) ++matching;
      if (rec.status != 0) ++answered;
    }
    double span = w.to_s - w.from_s;
    if (o.metric == "success_ratio" && scheduled > 0) {
      measured = static_cast<double>(ok) / static_cast<double>(scheduled);
      r.detail = count_text(ok) + " of " + count_text(scheduled) + " requests succeeded";
    } else if (o.metric == "ratio" && scheduled > 0) {
      measured = static_cast<double>(matching) / static_cast<double>(scheduled);
      r.detail = count_text(matching) + " of " + count_text(scheduled) + " requests";
    } else if (o.metric == "ok_rate" && span > 0) {
      measured = static_cast<double>(ok) / span;
      r.detail = count_text(ok) + " successful requests in " + num(span) + " s";
    } else if (o.metric == "achieved_rate" && span > 0) {
      measured = static_cast<double>(answered) / span;
      r.detail = count_text(answered) + " responses to " + count_text(scheduled) +
                 " requests scheduled in " + num(span) + " s";
    } else {
      r.detail = "no request was scheduled there";
    }
  }
  r.measured = measured;
  r.passed = !std::isnan(measured) && (!o.min || measured >= *o.min) && (!o.max || measured <= *o.max);
  if (!r.passed && !std::isnan(measured))
    r.detail = "measured " + num(measured) + (o.min && measured < *o.min ? " < " + num(*o.min) : "") +
               (o.max && measured > *o.max ? " > " + num(*o.max) : "") + ": " + r.detail;
  return r;
}

}  // namespace bulwark::drill
