// Adaptive load shedding, the process-wide part of one upstream: the concurrency limit that a
// LimitAlgorithm learns from the samples of completed attempts, the count of requests in
// flight against it, the count of requests waiting in the workers' queues, and what was shed.
//
// One value per upstream for the whole process, shared by the workers without locks:
//   - admission is one compare-and-swap on the in-flight count against the limit, so the
//     workers together never exceed the limit (no check-then-increment race);
//   - the algorithm is not thread-safe: a worker feeds it only while it holds `feeding_` (an
//     atomic flag it never waits for). A worker that finds the flag taken keeps the sample in
//     its own small buffer and feeds it with its next one.
//
// Priorities: critical keeps a reserved share of the limit (critical_reserve x limit, rounded
// up, but never the whole limit). The reserve binds only at the limit and only while critical traffic is present (a
// critical request arrived within the last second): below limit - reserve every priority is
// admitted; above it only critical, until critical requests hold the whole reserve. Without
// critical traffic the whole limit is open to the others.
//
// Time is passed in (milliseconds and microseconds of a monotonic clock), so tests drive it.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "resilience/concurrency_limit.h"

namespace bulwark {

enum class Priority : int { sheddable = 0, normal = 1, critical = 2 };
constexpr int kPriorities = 3;
const char* priority_name(Priority p);
// The priority a header value names (case-insensitive): critical, normal or sheddable; any
// other value (or none) is normal.
Priority parse_priority(std::string_view value);

class LoadShedder {
 public:
  LoadShedder(const LoadSheddingConfig& config, int workers);
  LoadShedder(const LoadShedder&) = delete;
  LoadShedder& operator=(const LoadShedder&) = delete;

  const LoadSheddingConfig& config() const { return config_; }
  const char* algorithm() const { return algorithm_->name(); }

  // Takes one unit of the limit for a request of priority `p` at now_ms; false when the
  // limit (or, for normal and sheddable, the critical reserve) leaves none.
  bool try_acquire(Priority p, std::uint64_t now_ms);
  // Takes one unit whatever the limit says (shadow mode: the request goes anyway, and the
  // in-flight count the algorithm sees stays true).
  void force_acquire(Priority p);
  // Gives back a unit taken by try_acquire or force_acquire with the same priority.
  void release(Priority p);
  // Marks critical traffic as present (its reserve binds for a second from now_ms).
  void saw_critical(std::uint64_t now_ms) {
    last_critical_ms_.store(now_ms + 1, std::memory_order_relaxed);
  }

  // Queue accounting for the whole process: false when queue.size requests wait already.
  bool try_enqueue();
  void dequeue();
  // Requests waiting in worker `worker`'s queue, by priority (each worker counts its own).
  void waits(int worker, Priority p, int delta);
  // Critical requests waiting in the workers' queues: a worker with none leaves a freed unit
  // to them rather than to its own lower-priority requests.
  std::int64_t critical_waiting() const {
    return critical_waiting_.load(std::memory_order_relaxed);
  }
  // The queue is full and worker `worker` has nothing below p to evict: another worker with a
  // request of lower priority waiting (-1: none).
  int worker_with_lower(int worker, Priority p) const;
  // Worker `worker` owes one eviction of a request below p to a request queued elsewhere
  // (paid from its own timer: take_owed_eviction).
  void owe_eviction(int worker, Priority p);
  bool take_owed_eviction(int worker, Priority p);
  bool owes_evictions(int worker) const;
  // Counts a request into the queue beyond queue.size, until the eviction it is owed is paid.
  void force_enqueue() { queued_.fetch_add(1, std::memory_order_relaxed); }

  // Feeds one completed attempt (see LimitAlgorithm::on_sample) from worker `worker`.
  void sample(int worker, std::uint64_t now_us, std::uint64_t rtt_us, int inflight, bool dropped);

  void count_shed(Priority p) {
    shed_[static_cast<std::size_t>(p)].fetch_add(1, std::memory_order_relaxed);
  }

  int limit() const { return limit_.load(std::memory_order_relaxed); }
  std::int64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  std::int64_t critical_in_flight() const {
    return critical_in_flight_.load(std::memory_order_relaxed);
  }
  std::int64_t queued() const { return queued_.load(std::memory_order_relaxed); }
  std::uint64_t shed(Priority p) const {
    return shed_[static_cast<std::size_t>(p)].load(std::memory_order_relaxed);
  }
  // The RTT of the attempts sampled in the last complete window of one second (0: none).
  struct RttWindow {
    std::uint64_t min_us = 0;
    std::uint64_t avg_us = 0;
    std::uint64_t samples = 0;
  };
  RttWindow recent_rtt() const;
  // The units of the limit reserved for critical requests (0 while no critical traffic is
  // present at now_ms).
  int critical_reserve(std::uint64_t now_ms) const;
  // When the critical reserve stops binding unless critical requests keep coming (0: never
  // bound).
  std::uint64_t critical_presence_until_ms() const;

  static constexpr std::uint64_t kCriticalPresenceMs = 1000;
  static constexpr std::uint64_t kRttWindowUs = 1'000'000;

 private:
  struct Sample {
    std::uint64_t now_us, rtt_us;
    int inflight;
    bool dropped;
  };
  // Samples a worker could not feed at once (only that worker touches its buffer).
  struct alignas(64) Backlog {
    std::array<Sample, 64> samples;
    std::size_t count = 0;
  };
  void feed(const Sample& s);  // holds feeding_
  struct alignas(64) WorkerQueue {
    std::array<std::atomic<std::int64_t>, kPriorities> waiting{};
    std::array<std::atomic<std::int64_t>, kPriorities> owed{};  // by the evicting request's priority
  };

  const LoadSheddingConfig config_;
  std::unique_ptr<LimitAlgorithm> algorithm_;
  std::vector<Backlog> backlog_;
  const int workers_;
  std::unique_ptr<WorkerQueue[]> worker_queues_;
  alignas(64) std::atomic<bool> feeding_{false};
  alignas(64) std::atomic<std::int64_t> in_flight_{0};
  std::atomic<int> limit_;
  std::atomic<std::int64_t> critical_in_flight_{0};
  std::atomic<std::uint64_t> last_critical_ms_{0};  // +1, so that 0 means never
  alignas(64) std::atomic<std::int64_t> queued_{0};
  std::atomic<std::int64_t> critical_waiting_{0};
  std::array<std::atomic<std::uint64_t>, kPriorities> shed_{};
  // RTT window (written under feeding_; the published values are read by /status).
  std::uint64_t window_start_us_ = 0;
  std::uint64_t window_min_us_ = 0;
  std::uint64_t window_sum_us_ = 0;
  std::uint64_t window_count_ = 0;
  std::atomic<std::uint64_t> rtt_min_us_{0};
  std::atomic<std::uint64_t> rtt_avg_us_{0};
  std::atomic<std::uint64_t> rtt_samples_{0};
};

}  // namespace bulwark
