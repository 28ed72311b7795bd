// What every kind of Downstream shares: the request's buffers and exchange, and its log line.
#include "pipeline/downstream.h"

#include "admin/stats.h"
#include "worker.h"

namespace bulwark {

void Downstream::acquire_buffers() { buffers_ = worker_.acquire_buffers(); }

void Downstream::make_exchange() { ex_ = worker_.exchanges().make(*this); }

void Downstream::end_exchange() {
  if (!ex_) return;
  // The exchange's back-off or per-try timer must not fire into a retired exchange (or the
  // next request's).
  if (buffers_) buffers_->stop_timers();
  Exchange* x = ex_;
  ex_ = nullptr;
  worker_.exchanges().retire(x);
}

const ListenerView& Downstream::view() const {
  return ex_ && ex_->view ? *ex_->view : *listener_.view;
}

void Downstream::account_request() {
  if (!ex_ || ex_->accounted || ex_->start_ns == 0) return;
  x().accounted = true;
  std::uint64_t duration = uv_hrtime() - x().start_ns;
  RouteStats& rs = x().route_stats ? *x().route_stats : view().unmatched();
  rs.count_status(x().status);
  if (x().route_stats) rs.duration.observe_ns(duration);
  AccessLog& log = worker_.access_log();
  if (!log.enabled()) return;
  AccessEntry e;
  e.request_id = x().request_id;
  e.client = client_ip();
  e.method = llhttp_method_name(static_cast<llhttp_method_t>(method_));
  e.path = target_path(origin_form(b().url));
  const ListenerConfig& lc = *view().config;
  e.listener = lc.name;
  if (x().route >= 0) {
    e.route = lc.routes[static_cast<std::size_t>(x().route)].name;
    e.upstream = lc.routes[static_cast<std::size_t>(x().route)].upstream;
  }
  if (x().attempts > 0) e.endpoint = b().endpoint_name;
  if (x().local_reply_sent)
    e.reason = reason_name(x().reply_reason);
  else if (x().shadow_limited)
    e.reason = "rate-limited-shadow";
  else if (x().shadow_shed)
    e.reason = "overloaded-shadow";
  e.status = x().status;
  e.attempts = x().attempts;
  e.duration_ns = duration;
  e.bytes_in = x().bytes_in;
  e.bytes_out = x().bytes_out;
  log.record(e);
}

}  // namespace bulwark
