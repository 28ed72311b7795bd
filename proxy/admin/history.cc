#include "admin/history.h"

#include <cstdio>

#include "core/json.h"
#include "generation.h"

namespace bulwark {

double bucket_quantile(const std::array<std::uint64_t, kDurationBuckets.size() + 1>& counts,
                       double p) {
  std::uint64_t total = 0;
  for (auto c : counts) total += c;
  if (total == 0) return -1;
  double rank = p * static_cast<double>(total);
  double seen = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    double in_bucket = static_cast<double>(counts[i]);
    if (seen + in_bucket >= rank && in_bucket > 0) {
      // The +Inf bucket has no upper bound: its lower bound is the answer.
      if (i == kDurationBuckets.size()) return kDurationBuckets.back();
      double lower = i == 0 ? 0 : kDurationBuckets[i - 1];
      double upper = kDurationBuckets[i];
      return lower + (upper - lower) * (rank - seen) / in_bucket;
    }
    seen += in_bucket;
  }
  return kDurationBuckets.back();
}

StatusHistory::Totals StatusHistory::read(const RouteStats& r) {
  Totals t;
  for (std::size_t c = 0; c < r.codes.size(); ++c) {
    std::uint64_t n = r.codes[c].get();
    t.requests += n;
    if (c >= 400) t.errors += n;  // index: status - 100, so 500..599
  }
  for (std::size_t b = 0; b < t.buckets.size(); ++b) t.buckets[b] = r.duration.buckets[b].get();
  return t;
}

void StatusHistory::tick(const Generation& g, std::uint64_t now_ms) {
  Totals delta;
  std::map<const RouteStats*, Totals> now;
  for (const auto& w : g.workers)
    for (const auto& listener : w.routes)
      for (const auto& route : listener) {
        Totals t = read(*route);
        auto before = last_.find(route.get());
        if (before != last_.end()) {
          const Totals& b = before->second;
          auto diff = [](std::uint64_t a, std::uint64_t z) { return a > z ? a - z : 0; };
          delta.requests += diff(t.requests, b.requests);
          delta.errors += diff(t.errors, b.errors);
          for (std::size_t i = 0; i < t.buckets.size(); ++i)
            delta.buckets[i] += diff(t.buckets[i], b.buckets[i]);
        } else if (primed_) {
          delta.requests += t.requests;  // a route added since the last tick
          delta.errors += t.errors;
          for (std::size_t i = 0; i < t.buckets.size(); ++i) delta.buckets[i] += t.buckets[i];
        }
        now[route.get()] = t;
      }
  last_ = std::move(now);
  watch(g, now_ms);

  if (primed_ && now_ms > last_ms_) {
    double seconds = static_cast<double>(now_ms - last_ms_) / 1000.0;
    Sample s;
    s.time_ms = now_ms;
    s.requests = static_cast<double>(delta.requests) / seconds;
    s.errors = static_cast<double>(delta.errors) / seconds;
    double p50 = bucket_quantile(delta.buckets, 0.5), p99 = bucket_quantile(delta.buckets, 0.99);
    s.p50_ms = p50 < 0 ? -1 : p50 * 1000;
    s.p99_ms = p99 < 0 ? -1 : p99 * 1000;
    push(s);
  }
  primed_ = true;
  last_ms_ = now_ms;
}

void StatusHistory::watch(const Generation& g, std::uint64_t now_ms) {
  for (const auto& state : g.upstreams) {
    auto endpoints = state->endpoints();
    for (const auto& e : *endpoints) {
      std::string key = state->config().name + "/" + e->name;
      std::string breaker = e->breaker ? breaker_state_name(e->breaker->state()) : "disabled";
      std::string health =
          state->config().health_check ? health_name(e->health_state()) : "unchecked";
      auto b = breaker_.find(key);
      if (b != breaker_.end() && b->second != breaker)
        add_event(now_ms, "breaker", key, b->second, breaker);
      auto h = health_.find(key);
      if (h != health_.end() && h->second != health)
        add_event(now_ms, "health", key, h->second, health);
      breaker_[key] = breaker;
      health_[key] = health;
    }
  }
}

void StatusHistory::push(const Sample& s) {
  if (samples_.size() < kSamples) {
    samples_.push_back(s);
  } else {
    samples_[next_sample_] = s;
  }
  next_sample_ = (next_sample_ + 1) % kSamples;
}

void StatusHistory::add_event(std::uint64_t now_ms, std::string kind, std::string subject,
                              std::string from, std::string to) {
  Event e{now_ms, std::move(kind), std::move(subject), std::move(from), std::move(to)};
  if (events_.size() < kEvents) {
    events_.push_back(std::move(e));
  } else {
    events_[next_event_] = std::move(e);
  }
  next_event_ = (next_event_ + 1) % kEvents;
}

std::string StatusHistory::json() const {
  std::string out = "{\"samples\":[";
  std::size_t n = samples_.size();
  std::size_t first = n < kSamples ? 0 : next_sample_;
  for (std::size_t i = 0; i < n; ++i) {
    const Sample& s = samples_[(first + i) % n];
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s[%llu,%.3f,%.3f,%.3f,%.3f]", i ? "," : "",
                  static_cast<unsigned long long>(s.time_ms), s.requests, s.errors, s.p50_ms,
                  s.p99_ms);
    out += buf;
  }
  out += "],\"events\":[";
  std::size_t m = events_.size();
  std::size_t efirst = m < kEvents ? 0 : next_event_;
  for (std::size_t i = 0; i < m; ++i) {
    const Event& e = events_[(efirst + i) % m];
    if (i) out += ",";
    out += "{\"time_ms\":" + std::to_string(e.time_ms) + ",\"kind\":";
    append_json_string(out, e.kind);
    out += ",\"subject\":";
    append_json_string(out, e.subject);
    out += ",\"from\":";
    append_json_string(out, e.from);
    out += ",\"to\":";
    append_json_string(out, e.to);
    out += "}";
  }
  out += "]}";
  return out;
}

}  // namespace bulwark
