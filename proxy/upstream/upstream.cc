#include "upstream/upstream.h"

#include <algorithm>

#include "upstream/h2_pool.h"

namespace bulwark {

Upstream::Upstream(uv_loop_t* loop, UpstreamState& state, int worker, std::uint64_t seed)
    : loop_(loop),
      state_(state),
      worker_(worker),
      balancer_(Balancer::parse(state.config().balance), seed) {
  uv_timer_init(loop_, &pending_timer_);
  pending_timer_.data = this;
  if (LoadShedder* shedder = state.shedder()) {
    shed_gate_ = std::make_unique<ShedGate>(loop, *shedder, worker);
    shed_gate_->set_wake_others([this] {
      if (slot_freed_) slot_freed_();
    });
  }
  refresh_endpoints();
}

Upstream::~Upstream() = default;

void Upstream::refresh_endpoints() {
  auto list = state_.endpoints();
  if (list == list_) return;
  list_ = list;
  std::vector<std::unique_ptr<UpstreamEndpoint>> next;
  for (const auto& shared : *list_) {
    std::unique_ptr<UpstreamEndpoint> entry;
    for (auto& e : live_)
      if (e && e->state == shared) entry = std::move(e);
    if (!entry) {
      entry = std::make_unique<UpstreamEndpoint>();
      entry->state = shared;
      // Pool limits are split evenly between workers, so they hold for the process.
      const PoolConfig& pc = state_.config().pool;
      auto workers = static_cast<std::uint64_t>(state_.workers());
      std::size_t cap = std::max<std::uint64_t>(1, pc.max_connections / workers);
      std::size_t max_idle = std::min<std::uint64_t>(
          cap,
          pc.max_idle / workers + (pc.max_idle % workers > static_cast<std::uint64_t>(worker_)));
      if (state_.config().h2)
        entry->pool = std::make_unique<H2Pool>(loop_, shared->address, state_.config(), cap,
                                               shared->per_worker[worker_], state_.tls(),
                                               shared->host);
      else
        entry->pool = std::make_unique<ConnectionPool>(loop_, shared->address, state_.config(),
                                                       cap, max_idle, shared->per_worker[worker_],
                                                       state_.tls(), shared->host);
    }
    next.push_back(std::move(entry));
  }
  for (auto& e : live_) {
    if (!e) continue;
    e->retired = true;
    e->pool->close_idle();
    retired_.push_back(std::move(e));
  }
  live_ = std::move(next);
  sweep_retired();
}

void Upstream::sweep_retired() {
  for (std::size_t i = 0; i < retired_.size();) {
    if (retired_[i]->in_flight == 0) {
      retired_[i]->pool->close_all();
      retired_.erase(retired_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
}

Upstream::Pick Upstream::pick(std::uint64_t now_ms, const UpstreamEndpoint* exclude) {
  Pick result;
  const std::size_t n = live_.size();
  if (n == 0) return result;
  candidates_.clear();
  std::size_t ejected = 0, open = 0, health_only = 0;
  std::uint64_t earliest = ~0ull;
  for (std::size_t i = 0; i < n; ++i) {
    const EndpointState& st = *live_[i]->state;
    const CircuitBreaker* b = st.breaker.get();
    bool unhealthy = st.health_state() == EndpointHealth::unhealthy;
    bool blocked = b && !b->available(now_ms);
    if (!unhealthy && !blocked) {
      candidates_.push_back(i);
      continue;
    }
    ++ejected;
    if (blocked) {
      ++open;
      if (b->state() == BreakerState::open) earliest = std::min(earliest, b->open_until_ms());
    } else {
      ++health_only;
    }
  }
  // Endpoints taken out by health checks or breakers count together toward max_ejected.
  const UpstreamConfig& uc = state_.config();
  double max_ejected = uc.circuit_breaker ? uc.circuit_breaker->max_ejected : 0.5;
  PanicMode mode = uc.circuit_breaker || uc.health_check
                       ? panic_mode(n, ejected, health_only, max_ejected)
                       : PanicMode::none;
  panic_ = mode != PanicMode::none;
  if (mode != state_.panic()) state_.set_panic(mode);  // logs the change, once per process
  if (mode == PanicMode::max_ejected) {
    candidates_.clear();
    for (std::size_t i = 0; i < n; ++i) candidates_.push_back(i);
  } else if (mode == PanicMode::all_ejected) {
    // Every endpoint is ejected and some only by health checks (a wrong health-check path,
    // a dependency of /healthz down): they take the traffic rather than nobody. Endpoints
    // whose breaker is open still fail fast.
    for (std::size_t i = 0; i < n; ++i) {
      const CircuitBreaker* b = live_[i]->state->breaker.get();
      if (!b || b->available(now_ms)) candidates_.push_back(i);
    }
  }
  // Avoid the endpoint that just failed when there is another choice.
  if (exclude && candidates_.size() > 1)
    for (std::size_t i = 0; i < candidates_.size(); ++i)
      if (live_[candidates_[i]].get() == exclude) {
        candidates_.erase(candidates_.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
  while (!candidates_.empty()) {
    in_flight_scratch_.resize(candidates_.size());
    for (std::size_t i = 0; i < candidates_.size(); ++i)
      in_flight_scratch_[i] = live_[candidates_[i]]->in_flight;
    std::size_t chosen = balancer_.pick(in_flight_scratch_);
    UpstreamEndpoint* e = live_[candidates_[chosen]].get();
    CircuitBreaker* b = e->state->breaker.get();
    bool ejected_pick = panic_ && (e->state->health_state() == EndpointHealth::unhealthy ||
                                   (b && !b->available(now_ms)));
    if (!b || (mode == PanicMode::max_ejected && b->state() == BreakerState::open) ||
        b->try_acquire(now_ms, &result.probe)) {
      result.endpoint = e;
      if (ejected_pick) state_.count_panic_routed();
      return result;
    }
    // Its last probe permit went to a request on another worker: try the others.
    candidates_.erase(candidates_.begin() + static_cast<std::ptrdiff_t>(chosen));
  }
  // Nothing usable: the breakers' doing if any is open, else the health checks'.
  result.circuit_open = open > 0;
  result.retry_after_ms = earliest == ~0ull ? 1000 : (earliest > now_ms ? earliest - now_ms : 0);
  return result;
}

void Upstream::begin_request(UpstreamEndpoint& e) {
  ++e.in_flight;
  stats(e).in_flight.add(1);
}

void Upstream::end_request(UpstreamEndpoint& e) {
  --e.in_flight;
  stats(e).in_flight.add(-1);
  if (e.retired && e.in_flight == 0) sweep_retired();
}

Upstream::Admission Upstream::admit(PendingRequest& r) {
  // Requests already waiting on this worker go first.
  bool first = queue_.empty();
  if (first && state_.try_admit()) return Admission::admitted;
  if (before_enqueue_) before_enqueue_();
  // A slot that another worker frees from here on wakes nobody until this request counts as
  // pending (release() looks at pending()): so look again once it does.
  if (state_.config().limits.max_pending == 0 || !state_.try_enqueue()) return Admission::rejected;
  if (first && state_.try_admit()) {
    state_.dequeue();
    return Admission::admitted;
  }
  r.pending_deadline_ms = uv_now(loop_) + state_.config().limits.pending_timeout_ms;
  queue_.push_back(r);
  if (queue_.front() == &r) arm_pending_timer();
  return Admission::queued;
}

void Upstream::unlink(PendingRequest& r) {
  queue_.remove(r);
  state_.dequeue();
}

void Upstream::cancel(PendingRequest& r) {
  bool was_head = queue_.front() == &r;
  unlink(r);
  if (was_head) arm_pending_timer();
}

void Upstream::release() {
  state_.release();
  // The next waiting request is admitted on the next loop turn, never from inside the
  // callbacks of the request that gave the slot back (admit -> reply -> release -> admit).
  if (!queue_.empty())
    kick();
  else if (state_.pending() > 0 && slot_freed_)
    slot_freed_();
}

void Upstream::kick() {
  kicked_ = true;
  uv_timer_start(&pending_timer_, on_pending_timer, 0, 0);
}

void Upstream::admit_waiting() {
  // Iterative, not recursive: an admitted request that is answered at once releases its
  // slot from inside on_admitted(); the loop below takes that slot for the next one.
  if (admitting_) return;
  admitting_ = true;
  bool admitted_any = false;
  while (!queue_.empty() && state_.try_admit()) {
    PendingRequest* r = queue_.front();
    unlink(*r);
    admitted_any = true;
    r->on_admitted();
  }
  admitting_ = false;
  if (admitted_any) arm_pending_timer();
}

void Upstream::arm_pending_timer() {
  if (kicked_) return;  // on_pending_timer runs on the next turn and arms it then
  if (queue_.empty()) {
    uv_timer_stop(&pending_timer_);
    return;
  }
  std::uint64_t now = uv_now(loop_);
  std::uint64_t due = queue_.front()->pending_deadline_ms;
  uv_timer_start(&pending_timer_, on_pending_timer, due > now ? due - now : 0, 0);
}

void Upstream::on_pending_timer(uv_timer_t* timer) {
  auto* u = static_cast<Upstream*>(timer->data);
  u->kicked_ = false;
  u->admit_waiting();
  std::uint64_t now = uv_now(u->loop_);
  // Deadlines grow along the queue (one pending_timeout for all), so expiry is from the head.
  while (!u->queue_.empty() && u->queue_.front()->pending_deadline_ms <= now) {
    PendingRequest* r = u->queue_.front();
    u->unlink(*r);
    r->on_pending_timeout();
  }
  u->arm_pending_timer();
}

void Upstream::close_unhealthy_idle() {
  for (auto& e : live_)
    if (e->state->health_state() == EndpointHealth::unhealthy) e->pool->close_idle();
}

void Upstream::close_all() {
  for (auto& e : live_) e->pool->close_all();
  for (auto& e : retired_) e->pool->close_all();
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&pending_timer_)))
    uv_close(reinterpret_cast<uv_handle_t*>(&pending_timer_), nullptr);
  if (shed_gate_) shed_gate_->close();
}

}  // namespace bulwark
