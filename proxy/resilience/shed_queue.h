// One worker's queue of requests waiting for a unit of an upstream's concurrency limit
// (load shedding), ordered by priority, with CoDel-style waits and adaptive LIFO:
//   - higher priority is served first (critical, then normal, then sheddable);
//   - the queue is *standing* when a request was shed within the last `interval` (the load is
//     above what the limit lets through: sustained overload, not a burst the queue absorbs),
//     or when for a whole `interval` it was not empty, no request got a unit at once and the
//     oldest waiting request never got one within `target` (CoDel's test: the shortest wait over the interval
//     is above the target; critical requests, which jump the queue, and newest-first pops,
//     which hide its age, do not count). Then the backend is
//     behind, not taking a burst: the wait allowed to normal and sheddable requests shrinks
//     from queue.timeout to `target`, and they are served newest-first, so the requests whose
//     clients are most likely still waiting go first and the old ones time out (Facebook's
//     adaptive LIFO with CoDel). Critical requests keep the whole queue.timeout, first in
//     first out;
//   - otherwise FIFO, each request waiting at most queue.timeout.
// See target_for and interval_for for the two durations.
// Pure: no clock, no timer, no callbacks; the owner (ShedGate) passes the time in and acts on
// what it returns. Constant time per operation.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

#include "core/intrusive_list.h"
#include "resilience/load_shedder.h"

namespace bulwark {

// A request in the queue (implemented by Exchange).
class ShedWaiter {
 public:
  // It got a unit of the limit (already taken for it).
  virtual void on_shed_admitted() = 0;
  // It is shed: its wait ran out, or a request of higher priority took its place.
  virtual void on_shed_rejected(const char* detail) = 0;

  ListHook<ShedWaiter> shed_hook;
  std::uint64_t shed_enqueued_ms = 0;
  Priority shed_priority = Priority::normal;
  bool shed_evicted = false;  // out of the queue, to be told it is shed (ShedGate)

 protected:
  ~ShedWaiter() = default;
};

class ShedQueue {
 public:
  ShedQueue(std::uint64_t timeout_ms, std::uint64_t target_ms = kTargetMs,
            std::uint64_t interval_ms = kIntervalMs)
      : timeout_ms_(timeout_ms),
        target_ms_(std::min(target_ms, timeout_ms)),
        interval_ms_(interval_ms) {}

  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }
  std::size_t size(Priority p) const { return sizes_[static_cast<std::size_t>(p)]; }
  void push(ShedWaiter& w, Priority p, std::uint64_t now_ms);
  void remove(ShedWaiter& w);
  // The next request to serve, or nullptr; taken out of the queue (and counted as a short
  // wait if it waited at most the target).
  ShedWaiter* pop(std::uint64_t now_ms);
  // The priority of the request pop() would return (the queue must not be empty).
  Priority head_priority() const;
  // The oldest request whose wait has run out at now_ms, or nullptr; taken out of the queue.
  ShedWaiter* pop_expired(std::uint64_t now_ms);
  // The newest request of a priority lower than `p`, lowest first, or nullptr; taken out of
  // the queue (to make room for a request of priority p).
  ShedWaiter* pop_lower(Priority p);
  // When the next request's wait runs out, or the queue turns standing (which shortens the
  // waits); 0 when the queue is empty.
  std::uint64_t next_deadline_ms(std::uint64_t now_ms) const;
  bool standing(std::uint64_t now_ms) const {
    return size_ > 0 &&
           (overloaded(now_ms) || now_ms >= std::max(good_ms_, busy_since_ms_) + interval_ms_);
  }
  // Whether a request was shed within the last interval (however long the queue is now).
  bool overloaded(std::uint64_t now_ms) const {
    return shed_seen_ && now_ms < shed_ms_ + interval_ms_;
  }
  // A request was shed (its wait ran out, it was evicted, or the queue was full): the load is
  // above what the limit lets through, and the queue stands for an interval from now.
  void shed(std::uint64_t now_ms) {
    shed_ms_ = now_ms;
    shed_seen_ = true;
  }
  // The wait allowed now to a request of priority p.
  std::uint64_t allowed_wait_ms(std::uint64_t now_ms, Priority p) const {
    return p != Priority::critical && standing(now_ms) ? target_ms_ : timeout_ms_;
  }
  // A request got a unit without waiting (the queue is keeping up).
  void admitted_at_once(std::uint64_t now_ms) { good_ms_ = now_ms; }

  static constexpr std::uint64_t kTargetMs = 5;
  static constexpr std::uint64_t kIntervalMs = 100;
  // CoDel's 5 ms / 100 ms suit the default queue.timeout (50 ms); a longer timeout (a backend
  // whose requests take long) scales them: the target is a tenth of it, and a queue counts as
  // standing once it has not drained for two timeouts.
  static std::uint64_t target_for(std::uint64_t timeout_ms) {
    return std::min(timeout_ms, std::max(kTargetMs, timeout_ms / 10));
  }
  static std::uint64_t interval_for(std::uint64_t timeout_ms) {
    return std::max(kIntervalMs, 2 * timeout_ms);
  }

 private:
  using List = IntrusiveList<ShedWaiter, &ShedWaiter::shed_hook>;
  List& list(Priority p) { return lists_[static_cast<std::size_t>(p)]; }

  const std::uint64_t timeout_ms_;
  const std::uint64_t target_ms_;
  const std::uint64_t interval_ms_;
  std::array<List, kPriorities> lists_;
  std::size_t size_ = 0;
  std::array<std::size_t, kPriorities> sizes_{};
  // The last time a request got a unit at once or after waiting at most the target.
  std::uint64_t good_ms_ = 0;
  std::uint64_t busy_since_ms_ = 0;  // when the queue last went from empty to not empty
  std::uint64_t shed_ms_ = 0;  // the last time a request was shed (when shed_seen_)
  bool shed_seen_ = false;
};

}  // namespace bulwark
