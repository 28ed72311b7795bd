// Adaptive concurrency limits: how many requests may be in flight to an upstream at once,
// learned from the latency and the failures of the requests that complete.
//
// A LimitAlgorithm is a pure class: it is fed one sample per completed request and answers
// with the current limit. It holds no clock of its own (time is passed in, in microseconds,
// monotonic), allocates nothing per sample and does O(1) work per sample. It is not
// thread-safe: one owner feeds it.
//
// A sample is (now_us, rtt_us, inflight, dropped):
//   - now_us: when the request completed;
//   - rtt_us: how long it took (now_us - rtt_us is when it started);
//   - inflight: requests in flight when it started, itself included;
//   - dropped: the request failed in a way that signals overload: a timeout (also a
//     client-side one), a reset, a 503 or 504. The caller must pass timeouts as dropped: the RTT of a
//     timed-out request is the timeout, and a run of such flat RTTs would otherwise look like
//     a healthy, unloaded backend and grow the limit. A dropped sample never grows the limit,
//     and its RTT is not used as a latency measurement.
//
// Every algorithm keeps its limit within [min_limit, max_limit]. The adaptive ones back off
// (limit x 0.9) at most once per round trip: a drop of a request that started before the
// previous back-off does not back off again, so a burst of timeouts from one overloaded
// moment is one signal, not fifty.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace bulwark {

struct LimitConfig {
  std::string algorithm = "gradient2";  // gradient2 | aimd | vegas | fixed
  int initial_limit = 20;
  int min_limit = 5;
  int max_limit = 1000;
};

class LimitAlgorithm {
 public:
  virtual ~LimitAlgorithm() = default;
  // Feeds the sample of one completed request (see the top of this file).
  virtual void on_sample(std::uint64_t now_us, std::uint64_t rtt_us, int inflight,
                         bool dropped) = 0;
  // Returns the number of requests that may be in flight now, in [min_limit, max_limit].
  virtual int limit() const = 0;
  // Returns the algorithm's name as written in the configuration.
  virtual const char* name() const = 0;
};

// Returns the algorithm `config.algorithm` names, starting at initial_limit (clamped into
// [min_limit, max_limit]); nullptr when the name is unknown, min_limit < 1 or
// min_limit > max_limit.
std::unique_ptr<LimitAlgorithm> make_limit_algorithm(const LimitConfig& config);

// The periodic re-measurement of the no-load RTT that keeps a baseline from going stale
// (taken under load at the start, or from before the backend got slower for good). Every
// `rounds` x limit samples, for one round of samples (as many as the cut limit) the limit is
// cut to `fraction` of itself, and the lowest RTT of the requests that started during the
// probe is the new baseline. The cut is one round long and proportional, not a fall to a
// handful of requests for a fixed time, which is what turns probes into 503 storms.
class BaselineProbe {
 public:
  BaselineProbe(int rounds, double fraction) : rounds_(rounds), fraction_(fraction) {}
  // Returns whether a probe runs now.
  bool active() const { return limit_ > 0; }
  // Returns the limit while a probe runs (0 when none does).
  int limit() const { return limit_; }
  // Counts one sample taken outside a probe; returns whether a probe starts with it, with
  // the limit cut from `limit` (never below `min_limit`).
  bool tick(std::uint64_t now_us, double limit, double min_limit);
  // Feeds a sample taken during a probe; returns whether the probe ends with it, and then
  // sets *lowest to the lowest RTT it measured (0: none, every sample was a drop).
  bool feed(std::uint64_t now_us, std::uint64_t rtt_us, bool dropped, double* lowest);

 private:
  const int rounds_;
  const double fraction_;
  std::uint64_t since_ = 0;  // samples since the last probe ended
  int limit_ = 0;
  int left_ = 0;  // samples still to take
  std::uint64_t start_us_ = 0;
  double lowest_ = 0;
};

// Shared by the adaptive algorithms: the bounds, and the once-per-round-trip back-off.
class AdaptiveLimit : public LimitAlgorithm {
 public:
  int limit() const override;

 protected:
  explicit AdaptiveLimit(const LimitConfig& config);
  // Returns `l` clamped into [min_limit, max_limit].
  double clamp(double l) const;
  // On a drop at now_us of a request that took rtt_us: multiplies the limit by kBackoff unless
  // the request started before the previous back-off. Returns whether it backed off.
  bool back_off(std::uint64_t now_us, std::uint64_t rtt_us);
  // Whether a sample of a request that took rtt_us, completing at now_us, may change the
  // limit: only when the request started after the previous change (one change per round
  // trip, the delay before a change shows in the samples). Marks now_us as the last change.
  bool new_round(std::uint64_t now_us, std::uint64_t rtt_us);

  static constexpr double kBackoff = 0.9;
  const double min_;
  const double max_;
  double limit_;

 private:
  std::uint64_t last_backoff_us_ = 0;
  std::uint64_t last_change_us_ = 0;
};

// fixed: the limit is initial_limit, whatever the samples say.
class FixedLimit final : public LimitAlgorithm {
 public:
  explicit FixedLimit(const LimitConfig& config);
  void on_sample(std::uint64_t, std::uint64_t, int, bool) override {}
  int limit() const override { return limit_; }
  const char* name() const override { return "fixed"; }

 private:
  const int limit_;
};

// aimd: additive increase, multiplicative decrease, like TCP Reno. +1 after every round of
// `limit` successful samples taken while the load was pressing the limit (in-flight at least
// limit/2); x0.9 on a drop. It reacts to drops only, not to latency: a route with no timeout
// never backs off before the backend fails.
class AimdLimit final : public AdaptiveLimit {
 public:
  explicit AimdLimit(const LimitConfig& config) : AdaptiveLimit(config) {}
  void on_sample(std::uint64_t now_us, std::uint64_t rtt_us, int inflight, bool dropped) override;
  const char* name() const override { return "aimd"; }

 private:
  int successes_ = 0;  // in the current round
};

// gradient2: compares a short-term RTT (exponential average over ~10 samples) with a
// long-term one (~600 samples): gradient = clamp(kTolerance x long / short, 0.5, 1), and
//   new = limit x gradient + (gradient == 1 ? sqrt(limit) : 0)
//   limit = limit x (1 - kSmoothing) + new x kSmoothing.
// Queue headroom (sqrt(limit)) is added only while no queueing is seen (gradient 1): were it
// always added, the limit would settle where gradient = 1 - 1/sqrt(limit) and creep up with
// the long-term RTT. The long-term RTT is the baseline of "no queueing":
//   - it follows samples down, but up only while the load is not pressing the limit
//     (in-flight below limit/2) or the limit is at min_limit; otherwise, under sustained
//     load, it would absorb the queueing the limit lets through and drift up, and the limit
//     with it;
//   - when it exceeds twice the short-term RTT (load went away after a long busy spell), it
//     decays x0.95 per sample toward the short one;
//   - a BaselineProbe (every kProbeRounds rounds, the limit halved for one round: the
//     tolerance lets the queue reach half the backend's capacity, so a smaller cut would not
//     drain it) replaces it with the drained RTT, so a baseline taken under load (a start
//     above the backend's capacity) or before the backend got slower for good is corrected
//     probe by probe.
// No growth while in-flight < limit/2. A drop backs off x0.9. With the backend's latency
// flat up to its capacity C and rising past it, the limit settles near kTolerance x C.
class Gradient2Limit final : public AdaptiveLimit {
 public:
  explicit Gradient2Limit(const LimitConfig& config)
      : AdaptiveLimit(config), probe_(kProbeRounds, 0.5) {}
  void on_sample(std::uint64_t now_us, std::uint64_t rtt_us, int inflight, bool dropped) override;
  // Returns the limit; during a probe, the probe's cut limit.
  int limit() const override;
  const char* name() const override { return "gradient2"; }
  // Returns the short-term and the long-term RTT (us; 0 before the first sample).
  double short_rtt_us() const { return short_; }
  double long_rtt_us() const { return long_; }
  // Returns whether a probe is cutting the limit now.
  bool probing() const { return probe_.active(); }

  static constexpr double kTolerance = 1.5;
  static constexpr double kSmoothing = 0.2;
  static constexpr int kShortWindow = 10;
  static constexpr int kLongWindow = 600;
  static constexpr int kProbeRounds = 30;

 private:
  BaselineProbe probe_;
  double short_ = 0;
  double long_ = 0;
};

// vegas: estimates the requests queued at the backend as limit x (1 - base / rtt), where base
// is the lowest RTT seen (the no-load RTT). With lg = max(1, log10(limit)): queue < 3 lg ->
// +lg; queue > 6 lg -> -lg; in between unchanged. No growth while in-flight < limit/2. A drop
// backs off x0.9. The base only falls between probes; a BaselineProbe (every kProbeRounds
// rounds, the limit cut to 3/4 for one round: enough to drain the queue of at most 6 lg that
// vegas keeps) replaces it, so it cannot stay stale for ever.
class VegasLimit final : public AdaptiveLimit {
 public:
  explicit VegasLimit(const LimitConfig& config)
      : AdaptiveLimit(config), probe_(kProbeRounds, 0.75) {}
  void on_sample(std::uint64_t now_us, std::uint64_t rtt_us, int inflight, bool dropped) override;
  // Returns the limit; during a probe, the probe's cut limit.
  int limit() const override;
  const char* name() const override { return "vegas"; }
  // Returns the no-load RTT estimate (us; 0 before the first sample).
  double base_rtt_us() const { return base_; }
  // Returns whether a probe is cutting the limit now.
  bool probing() const { return probe_.active(); }

  static constexpr int kProbeRounds = 30;

 private:
  BaselineProbe probe_;
  double base_ = 0;
};

}  // namespace bulwark
