// Admission: the ordered stages a request passes between routing and its first attempt (rate
// limit, then the upstream's bulkhead; the endpoint's breaker is consulted by the attempt).
// Each stage looks at the exchange and admits it, rejects it with the reason of a local reply,
// or makes it wait and resumes it later through Exchange::resume_admission(). A new control
// (load shedding, fault injection) joins as one more stage in Worker's list.
#pragma once

#include "http/local_reply.h"

namespace bulwark {

class Exchange;

struct Verdict {
  enum class Kind { admit, wait, reject };
  Kind kind = Kind::admit;
  Reason reason = Reason::bad_request;  // of the local reply, for reject
  const char* detail = "";
  int status = 0;  // of the local reply; 0: the reason's

  static Verdict admit() { return {}; }
  static Verdict wait() { return {Kind::wait, Reason::bad_request, "", 0}; }
  static Verdict reject(Reason reason, const char* detail, int status = 0) {
    return {Kind::reject, reason, detail, status};
  }
};

class AdmissionStage {
 public:
  AdmissionStage() = default;
  AdmissionStage(const AdmissionStage&) = delete;
  AdmissionStage& operator=(const AdmissionStage&) = delete;
  virtual ~AdmissionStage() = default;

  // Runs the stage for `x`. wait: the stage keeps the exchange and resumes it later, unless
  // cancel() comes first.
  virtual Verdict enter(Exchange& x) = 0;
  // The exchange ends while it waits in this stage: it must never be resumed.
  virtual void cancel(Exchange& x) = 0;
};

}  // namespace bulwark
