#include "pipeline/rate_limit_stage.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "admin/stats.h"
#include "pipeline/downstream.h"
#include "pipeline/exchange.h"
#include "worker.h"

namespace bulwark {

std::string_view RateLimitStage::key(Exchange& x) {
  if (x.route_state->config.rate_limit->key == "client_ip") return x.client.client_ip();
  if (!x.route_state->key_header.empty())
    return x.client.request_headers().get(x.route_state->key_header);
  return {};  // key: route, or a missing header (the shared anonymous bucket)
}

Verdict RateLimitStage::enter(Exchange& x) {
  if (!x.route_state->limiter) return Verdict::admit();
  const RateLimitConfig& rl = *x.route_state->config.rate_limit;
  std::string_view k = key(x);
  RedisRateLimiter* redis = rl.scope == "global" ? worker_.redis() : nullptr;
  if (redis) {
    // One Redis key per route and client key; long keys are hashed.
    char redis_key[300];
    std::string_view route = x.route_state->config.name;
    int n = k.size() <= 200
                ? std::snprintf(redis_key, sizeof redis_key, "bulwark:rl:%.*s:%.*s",
                                static_cast<int>(std::min<std::size_t>(route.size(), 64)),
                                route.data(), static_cast<int>(k.size()), k.data())
                : std::snprintf(redis_key, sizeof redis_key, "bulwark:rl:%.*s:#%016llx",
                                static_cast<int>(std::min<std::size_t>(route.size(), 64)),
                                route.data(), static_cast<unsigned long long>(hash_key(k)));
    // The answer comes to Exchange::on_rate_decision(), within redis.timeout.
    x.ratelimit_pending = redis->decide(std::string_view(redis_key, static_cast<std::size_t>(n)),
                                        rl.rate_per_second, rl.burst, &x);
    if (x.ratelimit_pending) return Verdict::wait();
  }
  bool redis_failed = rl.scope == "global";  // here: Redis cannot be asked now
  RateDecision d =
      redis_failed ? redis_fallback(x, k) : x.route_state->limiter->decide(k, x.start_ns / 1000);
  bool outage = redis_failed && rl.on_redis_failure == "deny";
  if (!denies(x, d, outage)) return Verdict::admit();
  return Verdict::reject(Reason::rate_limited, limited_detail(outage));
}

void RateLimitStage::cancel(Exchange& x) {
  if (!x.ratelimit_pending) return;
  if (RedisRateLimiter* redis = worker_.redis()) redis->cancel(x.ratelimit_pending);
  x.ratelimit_pending = nullptr;
}

Verdict RateLimitStage::decided(Exchange& x, bool ok, const RateDecision& decision) {
  x.ratelimit_pending = nullptr;
  RateDecision d = ok ? decision : redis_fallback(x, key(x));
  bool outage = !ok && x.route_state->config.rate_limit->on_redis_failure == "deny";
  if (denies(x, d, outage)) return Verdict::reject(Reason::rate_limited, limited_detail(outage));
  return Verdict::admit();
}

const char* RateLimitStage::limited_detail(bool redis_outage) {
  // An outage must not read as a quota breach.
  return redis_outage ? "the rate limit could not be checked: Redis is unavailable and "
                        "on_redis_failure is deny"
                      : "the route's rate limit is exceeded";
}

RateDecision RateLimitStage::redis_fallback(Exchange& x, std::string_view k) {
  const RateLimitConfig& rl = *x.route_state->config.rate_limit;
  if (rl.on_redis_failure == "local") {
    // This replica's share of the global quota (1/replicas), not the whole of it.
    RedisRateLimiter* redis = rl.scope == "global" ? worker_.redis() : nullptr;
    return x.route_state->limiter->decide(k, uv_hrtime() / 1000, redis ? redis->share() : 1.0);
  }
  RateDecision d;
  d.allowed = rl.on_redis_failure == "allow";
  d.retry_after_us = 1000000;
  return d;
}

bool RateLimitStage::denies(Exchange& x, const RateDecision& d, bool redis_outage) {
  const RateLimitConfig& rl = *x.route_state->config.rate_limit;
  RateLimitDecision kind = d.allowed      ? RateLimitDecision::allowed
                           : redis_outage ? RateLimitDecision::limited_redis_failure
                                          : RateLimitDecision::limited;
  x.route_stats->ratelimit[ratelimit_index(rl.scope == "global", kind)].add();
  auto seconds = [](std::uint64_t us) {
    return static_cast<unsigned long long>((us + 999999) / 1000000);
  };
  // Formatted by hand: this runs on every request of a limited route.
  char* out = x.ratelimit_header;
  char* end = x.ratelimit_header + sizeof x.ratelimit_header;
  auto put = [&](std::string_view text) {
    std::memcpy(out, text.data(), text.size());
    out += text.size();
  };
  put("RateLimit: \"default\";r=");
  out = std::to_chars(out, end, static_cast<unsigned long long>(d.remaining)).ptr;
  put(";t=");
  out = std::to_chars(out, end, seconds(d.reset_us)).ptr;
  put("\r\n");
  x.ratelimit_header_len = static_cast<std::size_t>(out - x.ratelimit_header);
  if (d.allowed) return false;
  if (!rl.enforce) {
    x.shadow_limited = true;  // shadow mode: counted and logged, not enforced
    return false;
  }
  std::string_view policy = x.route_state->policy_header;
  int m =
      std::snprintf(x.reply_extra, sizeof x.reply_extra, "Retry-After: %llu\r\n%.*s%.*s",
                    std::max(1ull, seconds(d.retry_after_us)), static_cast<int>(policy.size()),
                    policy.data(), static_cast<int>(x.ratelimit_header_len), x.ratelimit_header);
  x.reply_extra_len = m > 0 ? std::min(static_cast<std::size_t>(m), sizeof x.reply_extra - 1) : 0;
  x.ratelimit_header_len = 0;  // already in the reply
  return true;
}

}  // namespace bulwark
