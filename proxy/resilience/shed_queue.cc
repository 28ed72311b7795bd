#include "resilience/shed_queue.h"

#include <algorithm>

namespace bulwark {

void ShedQueue::push(ShedWaiter& w, Priority p, std::uint64_t now_ms) {
  if (size_ == 0) busy_since_ms_ = now_ms;
  w.shed_priority = p;
  w.shed_enqueued_ms = now_ms;
  list(p).push_back(w);
  ++size_;
  ++sizes_[static_cast<std::size_t>(p)];
}

void ShedQueue::remove(ShedWaiter& w) {
  if (!List::linked(w)) return;
  list(w.shed_priority).remove(w);
  --size_;
  --sizes_[static_cast<std::size_t>(w.shed_priority)];
}

Priority ShedQueue::head_priority() const {
  for (int p = kPriorities - 1; p > 0; --p)
    if (!lists_[static_cast<std::size_t>(p)].empty()) return static_cast<Priority>(p);
  return Priority::sheddable;
}

ShedWaiter* ShedQueue::pop(std::uint64_t now_ms) {
  if (size_ == 0) return nullptr;
  const Priority p = head_priority();
  List& l = list(p);
  const bool lifo = p != Priority::critical && standing(now_ms);
  ShedWaiter* w = lifo ? l.back() : l.front();
  remove(*w);
  // The oldest request of the queue waited within the target: the queue keeps up. Newest-first
  // pops of a standing queue hide its age, and critical requests jump it: neither counts.
  if (!lifo && p != Priority::critical && now_ms <= w->shed_enqueued_ms + target_ms_)
    good_ms_ = now_ms;
  return w;
}

ShedWaiter* ShedQueue::pop_expired(std::uint64_t now_ms) {
  ShedWaiter* oldest = nullptr;
  for (List& l : lists_) {
    ShedWaiter* w = l.front();
    if (w && w->shed_enqueued_ms + allowed_wait_ms(now_ms, w->shed_priority) <= now_ms &&
        (!oldest || w->shed_enqueued_ms < oldest->shed_enqueued_ms))
      oldest = w;
  }
  if (oldest) {
    remove(*oldest);
    shed(now_ms);
  }
  return oldest;
}

ShedWaiter* ShedQueue::pop_lower(Priority p) {
  for (int q = 0; q < static_cast<int>(p); ++q) {
    if (ShedWaiter* w = lists_[static_cast<std::size_t>(q)].back()) {
      remove(*w);
      return w;
    }
  }
  return nullptr;
}

std::uint64_t ShedQueue::next_deadline_ms(std::uint64_t now_ms) const {
  if (size_ == 0) return 0;
  std::uint64_t due = ~std::uint64_t{0};
  for (const List& l : lists_)
    if (const ShedWaiter* w = l.front())
      due = std::min(due, w->shed_enqueued_ms + allowed_wait_ms(now_ms, w->shed_priority));
  if (!standing(now_ms)) due = std::min(due, std::max(good_ms_, busy_since_ms_) + interval_ms_);
  return due;
}

}  // namespace bulwark
