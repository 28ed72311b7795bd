// Admission stage: the route's rate limit. The route's local GCRA bucket answers at once; a
// global limit asks Redis (the exchange waits at most redis.timeout, on_redis_failure is the
// fallback). Sets the RateLimit headers of the response, or the 429's Retry-After.
#pragma once

#include <string_view>

#include "pipeline/admission.h"
#include "resilience/rate_limiter.h"

namespace bulwark {

class Worker;

class RateLimitStage final : public AdmissionStage {
 public:
  explicit RateLimitStage(Worker& worker) : worker_(worker) {}

  Verdict enter(Exchange& x) override;
  void cancel(Exchange& x) override;
  // Redis answered for `x` (ok) or could not (!ok): the verdict to resume it with.
  Verdict decided(Exchange& x, bool ok, const RateDecision& decision);

 private:
  std::string_view key(Exchange& x);
  RateDecision redis_fallback(Exchange& x, std::string_view key);
  // Counts the decision and sets the RateLimit headers; true when the request is refused.
  // `redis_outage`: refused only because Redis could not be asked (on_redis_failure: deny).
  bool denies(Exchange& x, const RateDecision& d, bool redis_outage);
  static const char* limited_detail(bool redis_outage);

  Worker& worker_;
};

}  // namespace bulwark
