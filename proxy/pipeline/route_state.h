// What a route needs at run time beyond its config, shared by every worker: its retry
// policy and retry budget.
#pragma once

#include <memory>

#include "config/config.h"
#include "resilience/retry.h"

namespace bulwark {

struct RouteState {
  explicit RouteState(const RouteConfig& route) : config(route) {
    if (route.retry) {
      retry = std::make_unique<RetryPolicy>(*route.retry);
      budget = std::make_unique<RetryBudget>(route.retry->budget_ratio,
                                             route.retry->budget_min_per_second);
    }
  }
  const RouteConfig& config;
  std::unique_ptr<RetryPolicy> retry;   // null without a retry block
  std::unique_ptr<RetryBudget> budget;
};

}  // namespace bulwark
