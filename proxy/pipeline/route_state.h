// What a route needs at run time beyond its config, shared by every worker: its retry
// policy and retry budget.
#pragma once

#include <cmath>
#include <memory>
#include <string>

#include "config/config.h"
#include "resilience/rate_limiter.h"
#include "resilience/retry.h"

namespace bulwark {

struct RouteState {
  explicit RouteState(const RouteConfig& route) : config(route) {
    if (config.rate_limit) {
      const RateLimitConfig& rl = *config.rate_limit;
      limiter = std::make_unique<LocalRateLimiter>(rl.rate_per_second, rl.burst, rl.key == "route");
      if (rl.key.rfind("header:", 0) == 0) key_header = rl.key.substr(7);
      std::uint64_t window_s = static_cast<std::uint64_t>(std::ceil(rl.burst / rl.rate_per_second));
      policy_header = "RateLimit-Policy: \"default\";q=" +
                      std::to_string(static_cast<std::uint64_t>(rl.burst)) +
                      ";w=" + std::to_string(window_s < 1 ? 1 : window_s) + "\r\n";
    }
    if (config.retry) {
      retry = std::make_unique<RetryPolicy>(*config.retry);
      budget = std::make_unique<RetryBudget>(config.retry->budget_ratio,
                                             config.retry->budget_min_per_second);
    }
  }
  // A copy: the state outlives the config it was made from when a reload keeps it.
  const RouteConfig config;
  std::unique_ptr<RetryPolicy> retry;  // null without a retry block
  std::unique_ptr<RetryBudget> budget;
  std::unique_ptr<LocalRateLimiter> limiter;  // null without a rate_limit block
  std::string key_header;                     // for key: header:NAME
  std::string policy_header;                  // "RateLimit-Policy: ...\r\n"
};

}  // namespace bulwark
