// Rate limiting of a Downstream's request: the route's local bucket, or a decision from Redis
// (waited for at most redis.timeout, with on_redis_failure as the fallback), and the
// RateLimit headers.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "admin/stats.h"
#include "pipeline/downstream.h"
#include "worker.h"

namespace bulwark {

std::string_view Downstream::rate_limit_key() {
  if (route_state_->config.rate_limit->key == "client_ip") return client_ip_;
  if (!route_state_->key_header.empty()) return b().headers.get(route_state_->key_header);
  return {};  // key: route, or a missing header (the shared anonymous bucket)
}

int Downstream::check_rate_limit() {
  const RateLimitConfig& rl = *route_state_->config.rate_limit;
  std::string_view key = rate_limit_key();
  RedisRateLimiter* redis = rl.scope == "global" ? worker_.redis() : nullptr;
  if (redis) {
    // One Redis key per route and client key; long keys are hashed.
    char redis_key[300];
    std::string_view route = route_state_->config.name;
    int n = key.size() <= 200
                ? std::snprintf(redis_key, sizeof redis_key, "bulwark:rl:%.*s:%.*s",
                                static_cast<int>(std::min<std::size_t>(route.size(), 64)),
                                route.data(), static_cast<int>(key.size()), key.data())
                : std::snprintf(redis_key, sizeof redis_key, "bulwark:rl:%.*s:#%016llx",
                                static_cast<int>(std::min<std::size_t>(route.size(), 64)),
                                route.data(), static_cast<unsigned long long>(hash_key(key)));
    // The answer comes to on_rate_decision(), within redis.timeout.
    ratelimit_pending_ = redis->decide(std::string_view(redis_key, static_cast<std::size_t>(n)),
                                       rl.rate_per_second, rl.burst, this);
    if (ratelimit_pending_) return -1;
  }
  bool redis_failed = rl.scope == "global";  // here: Redis cannot be asked now
  RateDecision d =
      redis_failed ? redis_fallback(key) : route_state_->limiter->decide(key, start_ns_ / 1000);
  bool outage = redis_failed && rl.on_redis_failure == "deny";
  if (!rate_limit_denies(d, outage)) return -1;
  return reply_from_headers(Reason::rate_limited, rate_limited_detail(outage));
}

const char* Downstream::rate_limited_detail(bool redis_outage) {
  // An outage must not read as a quota breach.
  return redis_outage ? "the rate limit could not be checked: Redis is unavailable and "
                        "on_redis_failure is deny"
                      : "the route's rate limit is exceeded";
}

RateDecision Downstream::redis_fallback(std::string_view key) {
  const RateLimitConfig& rl = *route_state_->config.rate_limit;
  if (rl.on_redis_failure == "local") return route_state_->limiter->decide(key, uv_hrtime() / 1000);
  RateDecision d;
  d.allowed = rl.on_redis_failure == "allow";
  d.retry_after_us = 1000000;
  return d;
}

bool Downstream::rate_limit_denies(const RateDecision& d, bool redis_outage) {
  const RateLimitConfig& rl = *route_state_->config.rate_limit;
  RateLimitDecision kind = d.allowed      ? RateLimitDecision::allowed
                           : redis_outage ? RateLimitDecision::limited_redis_failure
                                          : RateLimitDecision::limited;
  route_stats_->ratelimit[ratelimit_index(rl.scope == "global", kind)].add();
  auto seconds = [](std::uint64_t us) {
    return static_cast<unsigned long long>((us + 999999) / 1000000);
  };
  // Formatted by hand: this runs on every request of a limited route.
  char* out = ratelimit_header_;
  char* end = ratelimit_header_ + sizeof ratelimit_header_;
  auto put = [&](std::string_view text) {
    std::memcpy(out, text.data(), text.size());
    out += text.size();
  };
  put("RateLimit: \"default\";r=");
  out = std::to_chars(out, end, static_cast<unsigned long long>(d.remaining)).ptr;
  put(";t=");
  out = std::to_chars(out, end, seconds(d.reset_us)).ptr;
  put("\r\n");
  ratelimit_header_len_ = static_cast<std::size_t>(out - ratelimit_header_);
  if (d.allowed) return false;
  if (!rl.enforce) {
    shadow_limited_ = true;  // shadow mode: counted and logged, not enforced
    return false;
  }
  std::string_view policy = route_state_->policy_header;
  int m = std::snprintf(reply_extra_, sizeof reply_extra_, "Retry-After: %llu\r\n%.*s%.*s",
                        std::max(1ull, seconds(d.retry_after_us)), static_cast<int>(policy.size()),
                        policy.data(), static_cast<int>(ratelimit_header_len_), ratelimit_header_);
  reply_extra_len_ = m > 0 ? std::min(static_cast<std::size_t>(m), sizeof reply_extra_ - 1) : 0;
  ratelimit_header_len_ = 0;  // already in the reply
  return true;
}

void Downstream::on_rate_decision(bool ok, const RateDecision& decision) {
  ratelimit_pending_ = nullptr;
  if (done()) return;
  RateDecision d = ok ? decision : redis_fallback(rate_limit_key());
  bool outage = !ok && route_state_->config.rate_limit->on_redis_failure == "deny";
  if (rate_limit_denies(d, outage)) {
    local_reply(Reason::rate_limited, rate_limited_detail(outage));
    return;
  }
  switch (upstream_->admit(*this)) {
    case Upstream::Admission::admitted:
      on_admitted();
      break;
    case Upstream::Admission::queued:
      queued_ = true;
      break;
    case Upstream::Admission::rejected:
      local_reply(Reason::pending_overflow,
                  "the upstream has max_requests in flight and max_pending waiting");
      break;
  }
}

}  // namespace bulwark
