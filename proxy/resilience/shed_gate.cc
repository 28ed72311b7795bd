#include "resilience/shed_gate.h"

#include <algorithm>

namespace bulwark {

ShedGate::ShedGate(uv_loop_t* loop, LoadShedder& shedder, int worker)
    : loop_(loop),
      shedder_(shedder),
      worker_(worker),
      queue_(shedder.config().queue_timeout_ms,
             ShedQueue::target_for(shedder.config().queue_timeout_ms),
             ShedQueue::interval_for(shedder.config().queue_timeout_ms)) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
}

ShedGate::Result ShedGate::admit(ShedWaiter& w, Priority p) {
  const std::uint64_t now = uv_now(loop_);
  if (p == Priority::critical) shedder_.saw_critical(now);
  // Requests already waiting go first: those of the same or a higher priority on this worker,
  // and critical ones on any. Waiting requests of a lower priority do not hold p back: a unit
  // free for p (a critical request's reserved unit, which they may not take) goes to it now.
  bool ahead = false;
  for (int q = static_cast<int>(p); q < kPriorities; ++q)
    if (queue_.size(static_cast<Priority>(q)) > 0) ahead = true;
  if (!ahead && (p == Priority::critical || shedder_.critical_waiting() == 0) &&
      shedder_.try_acquire(p, now)) {
    if (queue_.empty()) queue_.admitted_at_once(now);  // not a sign when it jumped a queue
    return Result::admitted;
  }
  if (!shedder_.config().enforce) {
    shedder_.force_acquire(p);
    shedder_.count_shed(p);
    return Result::shadow;
  }
  // Under sustained overload sheddable requests do not queue: the units that free up go to
  // the others, and sheddable ones get only what is free when they arrive.
  if (p == Priority::sheddable && queue_.overloaded(now)) {
    shedder_.count_shed(p);
    return Result::rejected;
  }
  const bool was_empty = queue_.empty();
  if (shedder_.try_enqueue()) {
    w.shed_evicted = false;
    push(w, p, now);
    // A unit given back on another worker between the try_acquire above and the enqueue woke
    // nobody (nothing was queued yet): look again on the next turn.
    if (was_empty)
      kick();
    else
      arm();
    return Result::queued;
  }
  // The queue is full: the newest request of the lowest priority below p makes room.
  queue_.shed(now);
  if (ShedWaiter* victim = taken(queue_.pop_lower(p))) {
    shedder_.count_shed(victim->shed_priority);
    victim->shed_evicted = true;
    evicted_.push_back(*victim);
    w.shed_evicted = false;
    push(w, p, now);  // takes the victim's place in the process-wide count
    kick();
    return Result::queued;
  }
  // Nothing to evict here, but a request of lower priority waits on another worker: it goes,
  // paid for by that worker on its next turn; meanwhile the queue holds one more than its size.
  const int other = shedder_.worker_with_lower(worker_, p);
  if (other >= 0) {
    shedder_.owe_eviction(other, p);
    shedder_.force_enqueue();
    w.shed_evicted = false;
    push(w, p, now);
    arm();
    wake_others();
    return Result::queued;
  }
  shedder_.count_shed(p);
  return Result::rejected;
}

void ShedGate::cancel(ShedWaiter& w) {
  if (!IntrusiveList<ShedWaiter, &ShedWaiter::shed_hook>::linked(w)) return;
  if (w.shed_evicted) {
    evicted_.remove(w);
    return;
  }
  remove(w);
  shedder_.dequeue();
  arm();
}

void ShedGate::push(ShedWaiter& w, Priority p, std::uint64_t now) {
  queue_.push(w, p, now);
  shedder_.waits(worker_, p, 1);
}

void ShedGate::remove(ShedWaiter& w) {
  queue_.remove(w);
  shedder_.waits(worker_, w.shed_priority, -1);
}

ShedWaiter* ShedGate::taken(ShedWaiter* w) {
  if (w) shedder_.waits(worker_, w->shed_priority, -1);
  return w;
}

void ShedGate::release(Priority p) {
  shedder_.release(p);
  if (queue_.size(Priority::critical) > 0)
    kick();
  else if (shedder_.critical_waiting() > 0)
    wake_others();  // the unit is theirs
  else if (!queue_.empty())
    kick();
  else if (shedder_.queued() > 0)
    wake_others();
}

bool ShedGate::retry_allowed() const {
  if (!shedder_.config().enforce) return true;
  return shedder_.queued() == 0 && shedder_.in_flight() <= shedder_.limit();
}

void ShedGate::sample(std::uint64_t now_us, std::uint64_t rtt_us, int inflight, bool dropped) {
  const int before = shedder_.limit();
  shedder_.sample(worker_, now_us, rtt_us, inflight, dropped);
  if (shedder_.limit() <= before) return;
  // A higher limit lets waiting requests in, here and on the other workers.
  if (!queue_.empty()) kick();
  if (shedder_.queued() > static_cast<std::int64_t>(queue_.size())) wake_others();
}

void ShedGate::kick() {
  kicked_ = true;
  uv_timer_start(&timer_, on_timer, 0, 0);
}

void ShedGate::arm() {
  if (kicked_ || running_) return;  // run() arms the timer when it is done
  const std::uint64_t now = uv_now(loop_);
  std::uint64_t due = queue_.next_deadline_ms(now);
  if (due == 0) {
    uv_timer_stop(&timer_);
    return;
  }
  // Waiting only for the critical reserve, which opens when critical traffic stops: look again
  // then (a unit given back would not come, none is held beyond the reserve).
  std::uint64_t reserve_ends = shedder_.critical_presence_until_ms();
  if (reserve_ends > now) due = std::min(due, reserve_ends);
  uv_timer_start(&timer_, on_timer, due > now ? due - now : 0, 0);
}

void ShedGate::on_timer(uv_timer_t* timer) { static_cast<ShedGate*>(timer->data)->run(); }

void ShedGate::run() {
  kicked_ = false;
  running_ = true;
  // The callbacks below may queue, cancel or release on this gate: each step looks afresh.
  // Evictions owed to requests of higher priority queued on other workers, newest and lowest
  // priority first (none left to evict: the debt lapses, the queue is over its size until a
  // request leaves it).
  for (int p = kPriorities - 1; p > 0; --p) {
    while (shedder_.take_owed_eviction(worker_, static_cast<Priority>(p))) {
      ShedWaiter* v = taken(queue_.pop_lower(static_cast<Priority>(p)));
      if (!v) continue;
      queue_.shed(uv_now(loop_));
      shedder_.dequeue();
      shedder_.count_shed(v->shed_priority);
      v->on_shed_rejected(evicted_detail());
    }
  }
  while (ShedWaiter* w = evicted_.front()) {
    evicted_.remove(*w);
    w->on_shed_rejected(evicted_detail());
  }
  const std::uint64_t now = uv_now(loop_);
  while (ShedWaiter* w = taken(queue_.pop_expired(now))) {
    shedder_.dequeue();
    shedder_.count_shed(w->shed_priority);
    w->on_shed_rejected(timeout_detail());
  }
  while (!queue_.empty()) {
    const Priority head = queue_.head_priority();
    if (head != Priority::critical && shedder_.critical_waiting() > 0) {
      wake_others();  // a critical request waits on another worker: a unit is for it first
      break;
    }
    if (!shedder_.try_acquire(head, now)) break;
    ShedWaiter* w = taken(queue_.pop(now));
    shedder_.dequeue();
    w->on_shed_admitted();
  }
  running_ = false;
  if (!evicted_.empty())
    kick();
  else
    arm();
}

void ShedGate::close() {
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_)))
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

}  // namespace bulwark
