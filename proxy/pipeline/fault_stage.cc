#include "pipeline/fault_stage.h"

#include <charconv>

#include "config/values.h"
#include "pipeline/downstream.h"
#include "pipeline/exchange.h"

namespace bulwark {

namespace {
constexpr int kDelay = 0, kAbort = 1;  // RouteStats::faults
}  // namespace

bool FaultStage::parse_header(std::string_view value, Forced& out) {
  Forced f;
  bool any = false;
  while (!value.empty()) {
    std::size_t comma = value.find(',');
    std::string_view item = trim(value.substr(0, comma));
    value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
    if (item.empty()) continue;
    std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) return false;
    std::string_view key = trim(item.substr(0, eq)), arg = trim(item.substr(eq + 1));
    if (key == "abort") {
      int status = 0;
      auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), status);
      if (ec != std::errc() || end != arg.data() + arg.size() || status < 200 || status > 599)
        return false;
      f.abort_status = status;
    } else if (key == "delay") {
      std::string error;
      auto ms = parse_duration(arg, error);
      if (!ms || *ms > kMaxForcedDelayMs) return false;
      f.delay_ms = *ms;
    } else {
      return false;
    }
    any = true;
  }
  if (!any) return false;
  out = f;
  return true;
}

double FaultStage::roll() {
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  return static_cast<double>((state_ * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

Verdict FaultStage::enter(Exchange& x) {
  const auto& fault = x.route_state->config.fault;
  if (!fault) return Verdict::admit();
  Forced forced;
  bool by_header = false;
  if (fault->allow_header) {
    std::string_view h = x.client.request_headers().get("x-bulwark-fault");
    by_header = !h.empty() && parse_header(h, forced);
  }
  std::uint64_t delay = 0;
  int abort = 0;
  if (by_header) {
    delay = forced.delay_ms;
    abort = forced.abort_status;
  } else {
    // Both dice are rolled for every request, so each percentage holds on its own.
    bool delayed = fault->delay_ratio > 0 && roll() < fault->delay_ratio;
    bool aborted = fault->abort_ratio > 0 && roll() < fault->abort_ratio;
    delay = delayed ? fault->delay_ms : 0;
    abort = aborted ? fault->abort_status : 0;
  }
  if (delay > 0) {
    x.route_stats->faults[kDelay].add();
    x.fault_abort = abort;
    uv_timer_t& t = x.client.b().fault_timer;
    t.data = &x;
    if (uv_timer_start(&t, on_delay, delay, 0) == 0) return Verdict::wait();
  }
  if (abort == 0) return Verdict::admit();
  x.route_stats->faults[kAbort].add();
  return Verdict::reject(Reason::fault_injected, "fault injected", abort);
}

void FaultStage::on_delay(uv_timer_t* timer) {
  auto& x = *static_cast<Exchange*>(timer->data);
  if (x.fault_abort == 0) return x.resume_admission(Verdict::admit());
  x.route_stats->faults[kAbort].add();
  x.resume_admission(Verdict::reject(Reason::fault_injected, "fault injected", x.fault_abort));
}

void FaultStage::cancel(Exchange& x) { uv_timer_stop(&x.client.b().fault_timer); }

}  // namespace bulwark
