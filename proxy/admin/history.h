// What the status page draws over time, kept by the admin loop (never the data path): once a
// second it sums the workers' counters into a sample (requests, 5xx, p50/p99 latency of that
// second) kept in a ring of the last minutes; four times a second it compares each endpoint's
// breaker and health state with the last look's to record transitions (with reloads, told by
// the server) in a ring of recent events, so the status page lists a transition about as soon
// as its /status poll shows the new state.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "admin/stats.h"

namespace bulwark {

struct Generation;

// p in [0, 1] of a histogram given as per-bucket counts (kDurationBuckets, then +Inf), in
// seconds, interpolated linearly within the bucket (as Prometheus' histogram_quantile does);
// -1 when there are no observations.
double bucket_quantile(const std::array<std::uint64_t, kDurationBuckets.size() + 1>& counts,
                       double p);

class StatusHistory {
 public:
  static constexpr std::size_t kSamples = 300;  // seconds
  static constexpr std::size_t kEvents = 100;
  static constexpr std::uint64_t kWatchIntervalMs = 250;  // watch(); every 4th is a tick()

  struct Sample {
    std::uint64_t time_ms = 0;  // wall clock, end of the second
    double requests = 0;        // per second
    double errors = 0;          // 5xx per second
    double p50_ms = -1;         // -1: no request that second
    double p99_ms = -1;
  };
  struct Event {
    std::uint64_t time_ms = 0;
    std::string kind;  // breaker | health | reload
    std::string subject;
    std::string from, to;
  };

  // Takes a sample at wall-clock `now_ms` of the counters of `g` (the generation in effect).
  // The first call only sets the baseline. Each route's counters are compared with what they
  // were at the last tick, so a route that a reload removed or added changes nothing else.
  // Also watches (below).
  void tick(const Generation& g, std::uint64_t now_ms);
  // Records the breaker and health transitions of `g`'s endpoints since the last look.
  void watch(const Generation& g, std::uint64_t now_ms);
  void add_event(std::uint64_t now_ms, std::string kind, std::string subject, std::string from,
                 std::string to);
  // {"samples":[[t,rps,eps,p50,p99],...],"events":[{...}]} (oldest first).
  std::string json() const;

 private:
  struct Totals {
    std::uint64_t requests = 0, errors = 0;
    std::array<std::uint64_t, kDurationBuckets.size() + 1> buckets{};
  };
  static Totals read(const RouteStats& r);
  void push(const Sample& s);

  bool primed_ = false;
  std::map<const RouteStats*, Totals> last_;  // each route's counters at the last tick
  std::uint64_t last_ms_ = 0;
  std::vector<Sample> samples_;  // ring
  std::size_t next_sample_ = 0;
  std::vector<Event> events_;  // ring
  std::size_t next_event_ = 0;
  std::map<std::string, std::string> breaker_, health_;  // last seen, by "upstream/endpoint"
};

}  // namespace bulwark
