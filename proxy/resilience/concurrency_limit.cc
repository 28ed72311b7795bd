#include "resilience/concurrency_limit.h"

#include <algorithm>
#include <cmath>

namespace bulwark {

std::unique_ptr<LimitAlgorithm> make_limit_algorithm(const LimitConfig& config) {
  if (config.min_limit < 1 || config.min_limit > config.max_limit) return nullptr;
  if (config.algorithm == "gradient2") return std::make_unique<Gradient2Limit>(config);
  if (config.algorithm == "aimd") return std::make_unique<AimdLimit>(config);
  if (config.algorithm == "vegas") return std::make_unique<VegasLimit>(config);
  if (config.algorithm == "fixed") return std::make_unique<FixedLimit>(config);
  return nullptr;
}

AdaptiveLimit::AdaptiveLimit(const LimitConfig& config)
    : min_(config.min_limit), max_(config.max_limit), limit_(clamp(config.initial_limit)) {}

int AdaptiveLimit::limit() const { return static_cast<int>(limit_); }

double AdaptiveLimit::clamp(double l) const { return std::clamp(l, min_, max_); }

bool AdaptiveLimit::new_round(std::uint64_t now_us, std::uint64_t rtt_us) {
  std::uint64_t started = now_us > rtt_us ? now_us - rtt_us : 0;
  if (started < last_change_us_) return false;
  last_change_us_ = now_us;
  return true;
}

bool AdaptiveLimit::back_off(std::uint64_t now_us, std::uint64_t rtt_us) {
  std::uint64_t started = now_us > rtt_us ? now_us - rtt_us : 0;
  if (started < last_backoff_us_) return false;  // this overload was already answered
  limit_ = clamp(limit_ * kBackoff);
  last_backoff_us_ = now_us;
  return true;
}

FixedLimit::FixedLimit(const LimitConfig& config)
    : limit_(std::clamp(config.initial_limit, config.min_limit, config.max_limit)) {}

void AimdLimit::on_sample(std::uint64_t now_us, std::uint64_t rtt_us, int inflight, bool dropped) {
  if (dropped) {
    if (back_off(now_us, rtt_us)) successes_ = 0;
    return;
  }
  if (inflight * 2.0 < limit_) return;  // the load is not pressing the limit
  if (++successes_ >= static_cast<int>(limit_)) {
    successes_ = 0;
    limit_ = clamp(limit_ + 1);
  }
}

bool BaselineProbe::tick(std::uint64_t now_us, double limit, double min_limit) {
  if (++since_ < static_cast<std::uint64_t>(rounds_ * limit)) return false;
  limit_ = static_cast<int>(std::max(min_limit, std::floor(limit * fraction_)));
  left_ = limit_;
  start_us_ = now_us;
  lowest_ = 0;
  return true;
}

bool BaselineProbe::feed(std::uint64_t now_us, std::uint64_t rtt_us, bool dropped, double* lowest) {
  // Only requests that started under the cut limit measure the drained backend.
  if (now_us - std::min(now_us, rtt_us) < start_us_) return false;
  const double rtt = static_cast<double>(std::max<std::uint64_t>(rtt_us, 1));
  if (!dropped && (lowest_ == 0 || rtt < lowest_)) lowest_ = rtt;
  if (--left_ > 0) return false;
  *lowest = lowest_;
  limit_ = 0;
  since_ = 0;
  return true;
}

int Gradient2Limit::limit() const {
  return probe_.active() ? probe_.limit() : AdaptiveLimit::limit();
}

void Gradient2Limit::on_sample(std::uint64_t now_us, std::uint64_t rtt_us, int inflight,
                               bool dropped) {
  if (probe_.active()) {
    double lowest = 0;
    if (probe_.feed(now_us, rtt_us, dropped, &lowest) && lowest > 0) {
      long_ = lowest;
      short_ = std::max(short_, lowest);
    }
    if (dropped) back_off(now_us, rtt_us);
    return;
  }
  if (dropped) {
    back_off(now_us, rtt_us);
    return;
  }
  const double rtt = static_cast<double>(std::max<std::uint64_t>(rtt_us, 1));
  const bool pressing = inflight * 2.0 >= limit_;
  if (short_ == 0) {
    short_ = long_ = rtt;
  } else {
    short_ += (rtt - short_) * (2.0 / (kShortWindow + 1));
    double next = long_ + (rtt - long_) * (2.0 / (kLongWindow + 1));
    if (next <= long_ || !pressing || limit_ <= min_) long_ = next;
    if (long_ > 2 * short_) long_ = std::max(short_, long_ * 0.95);
  }
  if (probe_.tick(now_us, limit_, min_)) return;
  if (!pressing) return;
  // One change per round trip: a request that started before the last change has not seen
  // it, and acting on it again overshoots (the limit swings between min and several times the
  // capacity).
  if (!new_round(now_us, rtt_us)) return;
  const double gradient = std::clamp(kTolerance * long_ / short_, 0.5, 1.0);
  const double target = limit_ * gradient + (gradient >= 1.0 ? std::sqrt(limit_) : 0.0);
  limit_ = clamp(limit_ * (1 - kSmoothing) + target * kSmoothing);
}

int VegasLimit::limit() const { return probe_.active() ? probe_.limit() : AdaptiveLimit::limit(); }

void VegasLimit::on_sample(std::uint64_t now_us, std::uint64_t rtt_us, int inflight, bool dropped) {
  if (probe_.active()) {
    double lowest = 0;
    if (probe_.feed(now_us, rtt_us, dropped, &lowest) && lowest > 0) base_ = lowest;
    if (dropped) back_off(now_us, rtt_us);
    return;
  }
  if (dropped) {
    back_off(now_us, rtt_us);
    return;
  }
  const double rtt = static_cast<double>(std::max<std::uint64_t>(rtt_us, 1));
  if (base_ == 0 || rtt < base_) base_ = rtt;
  if (probe_.tick(now_us, limit_, min_)) return;
  if (inflight * 2.0 < limit_) return;  // the load is not pressing the limit
  if (!new_round(now_us, rtt_us)) return;  // one change per round trip
  const double lg = std::max(1.0, std::log10(limit_));
  const double queue = limit_ * (1 - base_ / rtt);
  if (queue < 3 * lg)
    limit_ = clamp(limit_ + lg);
  else if (queue > 6 * lg)
    limit_ = clamp(limit_ - lg);
}

}  // namespace bulwark
