// Warnings about a valid configuration whose policies are risky: retries the budget does not
// limit, retries that cannot all run, replayed non-idempotent requests, a breaker that can never
// trip on its rates, a rate-limit burst below one second of rate, a health check slower than
// the breaker, a shedding queue that outwaits its routes. Printed by `bulwark --check` and
// logged at start and on each successful reload; they never refuse a file.
#pragma once

#include <string>
#include <vector>

#include "config/config.h"

namespace bulwark {

// A budget.min_per_second at or above this is taken as "no budget": with it, every failed
// request of most routes may be retried (the default floor is 10 retries per second).
inline constexpr double kLintMaxRetryFloor = 1000;

// One line per warning, "FILE:LINE:COL: key.path: message" (as errors are; the callers put
// "warning: " in front), in file order. LINE:COL is the offending key's, or its block's when
// the key was left at its default.
std::vector<std::string> lint_config(const Config& config);

}  // namespace bulwark
