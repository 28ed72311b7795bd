#include "pipeline/load_shedding_stage.h"

#include <cstring>

#include "pipeline/downstream.h"
#include "pipeline/exchange.h"

namespace bulwark {

Verdict LoadSheddingStage::enter(Exchange& x) {
  ShedGate* gate = x.upstream->shed_gate();
  if (!gate) return Verdict::admit();
  // Several field lines mean their comma-joined value (RFC 9110 5.3), which names no single
  // priority: normal, whichever line comes first.
  const auto& headers = x.client.request_headers();
  const std::string& name = gate->shedder().config().priority_header;
  x.priority = headers.count(name) > 1 ? Priority::normal : parse_priority(headers.get(name));
  switch (gate->admit(x, x.priority)) {
    case ShedGate::Result::admitted:
      x.shed.take(*gate, x.priority);
      return Verdict::admit();
    case ShedGate::Result::shadow:
      x.shed.take(*gate, x.priority);
      x.shadow_shed = true;  // shadow mode: counted and logged, not enforced
      return Verdict::admit();
    case ShedGate::Result::queued:
      x.shed_waiting = true;  // Exchange::on_shed_admitted or on_shed_rejected follows
      return Verdict::wait();
    case ShedGate::Result::rejected:
      break;
  }
  return shed(x, ShedGate::full_detail());
}

void LoadSheddingStage::cancel(Exchange& x) {
  if (!x.shed_waiting) return;
  x.shed_waiting = false;
  x.upstream->shed_gate()->cancel(x);
}

Verdict LoadSheddingStage::shed(Exchange& x, const char* detail) {
  static const char kRetryAfter[] = "Retry-After: 1\r\n";
  std::memcpy(x.reply_extra, kRetryAfter, sizeof kRetryAfter - 1);
  x.reply_extra_len = sizeof kRetryAfter - 1;
  return Verdict::reject(Reason::overloaded, detail);
}

}  // namespace bulwark
