// Admission stage: the upstream's adaptive concurrency limit (load_shedding). A request of the
// priority its priority_header names is admitted while a unit of the limit is free, waits in
// the worker's priority queue otherwise, and is answered 503 `overloaded` (Retry-After: 1)
// when the queue is full or its wait runs out. An admitted exchange holds a ShedTicket until it
// ends (or its connection turns into a tunnel); each of its attempts feeds the limit a sample.
// In shadow mode (enforce: false) a request over the limit is counted and logged, not shed.
#pragma once

#include "pipeline/admission.h"

namespace bulwark {

class LoadSheddingStage final : public AdmissionStage {
 public:
  Verdict enter(Exchange& x) override;
  void cancel(Exchange& x) override;
  // The verdict for a request the gate shed (now, or later from its queue).
  static Verdict shed(Exchange& x, const char* detail);
};

}  // namespace bulwark
