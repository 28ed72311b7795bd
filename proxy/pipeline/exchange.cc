#include "pipeline/exchange.h"

#include "pipeline/downstream.h"
#include "pipeline/rate_limit_stage.h"

namespace bulwark {

Exchange::~Exchange() {
  // An exchange never outlives a wait: a queue or Redis must not call it back.
  if (waiting_stage) waiting_stage->cancel(*this);
}

void Exchange::on_admitted() {
  queued = false;
  bulkhead.take(*upstream);
  connection.resume_admission(Verdict::admit());
}

void Exchange::on_pending_timeout() {
  queued = false;
  connection.resume_admission(Verdict::reject(
      Reason::pending_overflow, "no upstream capacity freed up within pending_timeout"));
}

void Exchange::on_rate_decision(bool ok, const RateDecision& decision) {
  // Only the rate-limit stage asks Redis.
  auto* stage = static_cast<RateLimitStage*>(waiting_stage);
  connection.resume_admission(stage->decided(*this, ok, decision));
}

}  // namespace bulwark
