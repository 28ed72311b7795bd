// Admission stage: fault injection (a route's `fault` block), for chaos drills. The request is
// delayed with probability delay.percent (the route's timeout keeps running), then aborted with
// probability abort.percent: a local reply of abort.status, reason `fault-injected`, without any
// attempt (no endpoint, breaker or retry hears of it). With `allow_header: true` a request can
// force a fault with `x-bulwark-fault: abort=STATUS`, `delay=DURATION` or both, comma separated
// (`abort=503, delay=200ms`); without it the header is ignored (and forwarded like any other),
// so a client cannot inject faults into a route that did not ask for drills.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string_view>

#include "pipeline/admission.h"

namespace bulwark {

class FaultStage final : public AdmissionStage {
 public:
  explicit FaultStage(std::uint64_t seed) : state_(seed | 1) {}
  Verdict enter(Exchange& x) override;
  void cancel(Exchange& x) override;

  // What `x-bulwark-fault` asks for. False when the value is not understood (then ignored).
  struct Forced {
    int abort_status = 0;        // 0: no abort
    std::uint64_t delay_ms = 0;  // 0: no delay
  };
  static bool parse_header(std::string_view value, Forced& out);
  static constexpr std::uint64_t kMaxForcedDelayMs = 60000;

 private:
  static void on_delay(uv_timer_t* timer);
  double roll();  // uniform in [0, 1)
  std::uint64_t state_;  // xorshift64*
};

}  // namespace bulwark
