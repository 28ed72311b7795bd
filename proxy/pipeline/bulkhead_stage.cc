#include "pipeline/bulkhead_stage.h"

#include "pipeline/exchange.h"

namespace bulwark {

Verdict BulkheadStage::enter(Exchange& x) {
  switch (x.upstream->admit(x)) {
    case Upstream::Admission::admitted:
      x.bulkhead.take(*x.upstream);
      return Verdict::admit();
    case Upstream::Admission::queued:
      x.queued = true;  // Exchange::on_admitted or on_pending_timeout follows
      return Verdict::wait();
    case Upstream::Admission::rejected:
      break;
  }
  return Verdict::reject(Reason::pending_overflow, overflow_detail());
}

void BulkheadStage::cancel(Exchange& x) {
  if (!x.queued) return;
  x.queued = false;
  x.upstream->cancel(x);
}

}  // namespace bulwark
