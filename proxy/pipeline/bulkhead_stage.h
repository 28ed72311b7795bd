// Admission stage: the upstream's bulkhead (limits.max_requests in flight in the process,
// max_pending waiting for at most pending_timeout). An admitted exchange holds a
// BulkheadTicket until it ends.
#pragma once

#include "pipeline/admission.h"

namespace bulwark {

class BulkheadStage final : public AdmissionStage {
 public:
  Verdict enter(Exchange& x) override;
  void cancel(Exchange& x) override;
  static const char* overflow_detail() {
    return "the upstream has max_requests in flight and max_pending waiting";
  }
};

}  // namespace bulwark
