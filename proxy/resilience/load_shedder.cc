#include "resilience/load_shedder.h"

#include <algorithm>
#include <cmath>

namespace bulwark {

const char* priority_name(Priority p) {
  switch (p) {
    case Priority::critical:
      return "critical";
    case Priority::sheddable:
      return "sheddable";
    case Priority::normal:
      break;
  }
  return "normal";
}

namespace {
bool equals_lower(std::string_view value, std::string_view lower) {
  if (value.size() != lower.size()) return false;
  for (std::size_t i = 0; i < value.size(); ++i) {
    char c = value[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower[i]) return false;
  }
  return true;
}
}  // namespace

Priority parse_priority(std::string_view value) {
  if (equals_lower(value, "critical")) return Priority::critical;
  if (equals_lower(value, "sheddable")) return Priority::sheddable;
  return Priority::normal;
}

namespace {
LimitConfig limit_config(const LoadSheddingConfig& c) {
  LimitConfig l;
  l.algorithm = c.algorithm;
  l.initial_limit = c.initial_limit;
  l.min_limit = c.min_limit;
  l.max_limit = c.max_limit;
  return l;
}
}  // namespace

LoadShedder::LoadShedder(const LoadSheddingConfig& config, int workers)
    : config_(config),
      algorithm_(make_limit_algorithm(limit_config(config))),
      backlog_(static_cast<std::size_t>(std::max(workers, 1))),
      workers_(std::max(workers, 1)),
      worker_queues_(new WorkerQueue[static_cast<std::size_t>(std::max(workers, 1))]) {
  // The loader refuses what make_limit_algorithm cannot build; a fixed limit is the safe
  // fallback should one get here anyway.
  if (!algorithm_) {
    LimitConfig fixed = limit_config(config);
    fixed.algorithm = "fixed";
    fixed.min_limit = 1;
    fixed.max_limit = std::max(1, config.max_limit);
    algorithm_ = make_limit_algorithm(fixed);
  }
  limit_.store(algorithm_->limit(), std::memory_order_relaxed);
}

int LoadShedder::critical_reserve(std::uint64_t now_ms) const {
  std::uint64_t seen = last_critical_ms_.load(std::memory_order_relaxed);
  if (seen == 0 || now_ms + 1 > seen + kCriticalPresenceMs) return 0;
  // Never the whole limit: the others keep at least one unit.
  const int l = limit();
  return std::min(static_cast<int>(std::ceil(config_.critical_reserve * l)), l - 1);
}

std::uint64_t LoadShedder::critical_presence_until_ms() const {
  std::uint64_t seen = last_critical_ms_.load(std::memory_order_relaxed);
  // The first millisecond at which critical_reserve() is 0 again (seen is the arrival + 1):
  // a timer set for it finds the reserve open, not binding for one more millisecond.
  return seen == 0 ? 0 : seen + kCriticalPresenceMs;
}

bool LoadShedder::try_acquire(Priority p, std::uint64_t now_ms) {
  std::int64_t cap = limit();
  if (p != Priority::critical) {
    // The part of the reserve that critical requests do not hold yet stays free for them.
    std::int64_t reserve = critical_reserve(now_ms);
    if (reserve > 0) cap -= std::max<std::int64_t>(0, reserve - critical_in_flight());
  }
  std::int64_t cur = in_flight_.load(std::memory_order_relaxed);
  while (cur < cap) {
    if (in_flight_.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed)) {
      if (p == Priority::critical) critical_in_flight_.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
  }
  return false;
}

void LoadShedder::force_acquire(Priority p) {
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  if (p == Priority::critical) critical_in_flight_.fetch_add(1, std::memory_order_relaxed);
}

void LoadShedder::release(Priority p) {
  if (p == Priority::critical) critical_in_flight_.fetch_sub(1, std::memory_order_relaxed);
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
}

bool LoadShedder::try_enqueue() {
  std::int64_t cur = queued_.load(std::memory_order_relaxed);
  const auto size = static_cast<std::int64_t>(config_.queue_size);
  while (cur < size)
    if (queued_.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed)) return true;
  return false;
}

void LoadShedder::dequeue() { queued_.fetch_sub(1, std::memory_order_relaxed); }

void LoadShedder::waits(int worker, Priority p, int delta) {
  worker_queues_[static_cast<std::size_t>(worker % workers_)]
      .waiting[static_cast<std::size_t>(p)]
      .fetch_add(delta, std::memory_order_relaxed);
  if (p == Priority::critical) critical_waiting_.fetch_add(delta, std::memory_order_relaxed);
}

int LoadShedder::worker_with_lower(int worker, Priority p) const {
  for (int q = 0; q < static_cast<int>(p); ++q)
    for (int w = 0; w < workers_; ++w) {
      if (w == worker) continue;
      const WorkerQueue& wq = worker_queues_[static_cast<std::size_t>(w)];
      std::int64_t waiting = wq.waiting[static_cast<std::size_t>(q)].load(std::memory_order_relaxed);
      std::int64_t owed = 0;  // evictions already asked of it that may take these
      for (int r = q + 1; r < kPriorities; ++r)
        owed += wq.owed[static_cast<std::size_t>(r)].load(std::memory_order_relaxed);
      if (waiting > owed) return w;
    }
  return -1;
}

void LoadShedder::owe_eviction(int worker, Priority p) {
  worker_queues_[static_cast<std::size_t>(worker % workers_)]
      .owed[static_cast<std::size_t>(p)]
      .fetch_add(1, std::memory_order_relaxed);
}

bool LoadShedder::owes_evictions(int worker) const {
  const WorkerQueue& wq = worker_queues_[static_cast<std::size_t>(worker % workers_)];
  for (const auto& owed : wq.owed)
    if (owed.load(std::memory_order_relaxed) > 0) return true;
  return false;
}

bool LoadShedder::take_owed_eviction(int worker, Priority p) {
  auto& owed =
      worker_queues_[static_cast<std::size_t>(worker % workers_)].owed[static_cast<std::size_t>(p)];
  std::int64_t cur = owed.load(std::memory_order_relaxed);
  while (cur > 0)
    if (owed.compare_exchange_weak(cur, cur - 1, std::memory_order_relaxed)) return true;
  return false;
}

void LoadShedder::sample(int worker, std::uint64_t now_us, std::uint64_t rtt_us, int inflight,
                         bool dropped) {
  Backlog& mine = backlog_[static_cast<std::size_t>(worker) % backlog_.size()];
  Sample s{now_us, rtt_us, inflight, dropped};
  if (feeding_.exchange(true, std::memory_order_acquire)) {
    // Another worker is feeding: keep it for later (the oldest goes when the buffer is full,
    // which takes 64 samples in a row finding the flag taken).
    if (mine.count == mine.samples.size()) {
      std::move(mine.samples.begin() + 1, mine.samples.end(), mine.samples.begin());
      --mine.count;
    }
    mine.samples[mine.count++] = s;
    return;
  }
  for (std::size_t i = 0; i < mine.count; ++i) feed(mine.samples[i]);
  mine.count = 0;
  feed(s);
  limit_.store(algorithm_->limit(), std::memory_order_relaxed);
  feeding_.store(false, std::memory_order_release);
}

void LoadShedder::feed(const Sample& s) {
  algorithm_->on_sample(s.now_us, s.rtt_us, s.inflight, s.dropped);
  if (s.dropped) return;  // a drop's RTT is not a latency measurement
  if (window_start_us_ == 0) window_start_us_ = s.now_us;
  if (s.now_us >= window_start_us_ + kRttWindowUs) {
    if (window_count_ > 0) {
      rtt_min_us_.store(window_min_us_, std::memory_order_relaxed);
      rtt_avg_us_.store(window_sum_us_ / window_count_, std::memory_order_relaxed);
      rtt_samples_.store(window_count_, std::memory_order_relaxed);
    }
    window_start_us_ = s.now_us;
    window_min_us_ = window_sum_us_ = window_count_ = 0;
  }
  if (window_count_ == 0 || s.rtt_us < window_min_us_) window_min_us_ = s.rtt_us;
  window_sum_us_ += s.rtt_us;
  ++window_count_;
}

LoadShedder::RttWindow LoadShedder::recent_rtt() const {
  RttWindow w;
  w.min_us = rtt_min_us_.load(std::memory_order_relaxed);
  w.avg_us = rtt_avg_us_.load(std::memory_order_relaxed);
  w.samples = rtt_samples_.load(std::memory_order_relaxed);
  return w;
}

}  // namespace bulwark
