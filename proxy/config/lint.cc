#include "config/lint.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <optional>
#include <utility>

#include "net/tls.h"

namespace bulwark {
namespace {

// 1500 -> "1500ms", 30000 -> "30s", 120000 -> "2m": the config's own duration forms.
std::string duration(std::uint64_t ms) {
  if (ms == 0) return "0";
  if (ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string rate(double per_second) { return number(per_second) + "/s"; }

std::string percent(double ratio) { return number(ratio * 100) + "%"; }

class Lint {
 public:
  explicit Lint(const Config& c) : c_(c) {}

  void warn(const std::string& path, const std::string& message) {
    SourceMark m = c_.mark_of(path);
    lines_.push_back({{m.line, m.column},
                      c_.file + ":" + std::to_string(m.line) + ":" + std::to_string(m.column) +
                          ": " + path + ": " + message});
  }
  // In file order (a route's key before an upstream's written below it).
  std::vector<std::string> take() {
    std::stable_sort(lines_.begin(), lines_.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::string> out;
    for (auto& l : lines_) out.push_back(std::move(l.second));
    return out;
  }

 private:
  const Config& c_;
  std::vector<std::pair<std::pair<int, int>, std::string>> lines_;
};

// The most requests per second this process can send through the route, when a rate limit
// bounds it: one enforced bucket for the whole route (key: route). A client_ip or header key
// bounds each client, not the route; shadow mode bounds nothing.
std::optional<double> route_cap(const RouteConfig& r) {
  if (!r.rate_limit || !r.rate_limit->enforce || r.rate_limit->key != "route") return std::nullopt;
  return r.rate_limit->rate_per_second;
}

std::string route_path(std::size_t l, std::size_t r) {
  return "listeners[" + std::to_string(l) + "].routes[" + std::to_string(r) + "]";
}

void lint_retry(Lint& lint, const RouteConfig& r, const std::string& path) {
  const RetryConfig& rt = *r.retry;
  const std::string p = path + ".retry";
  // 1. A budget that does not limit retries (or that allows none).
  if (rt.budget_ratio == 0 && rt.budget_min_per_second == 0) {
    lint.warn(p + ".budget",
              "budget.ratio and budget.min_per_second are both 0: the budget allows no retry at "
              "all (0 is not \"unlimited\"), so this retry block never retries; set "
              "budget.ratio (default 20%) or remove the block");
  } else if (rt.budget_ratio >= 1) {
    lint.warn(p + ".budget.ratio",
              "budget.ratio " + percent(rt.budget_ratio) +
                  " allows as many retries as requests: the budget no longer protects a failing "
                  "upstream, whose load retries double in an outage; keep it low (default 20%)");
  } else if (auto cap = route_cap(r); cap && rt.budget_min_per_second >= *cap) {
    lint.warn(p + ".budget.min_per_second",
              "budget.min_per_second (" + rate(rt.budget_min_per_second) +
                  ") is not below the route's rate limit (" + rate(*cap) +
                  "): the floor alone lets every request be retried, so the budget never limits "
                  "retries and an outage multiplies the upstream's load; keep it well below the "
                  "route's traffic (default 10)");
  } else if (rt.budget_min_per_second >= kLintMaxRetryFloor) {
    lint.warn(p + ".budget.min_per_second",
              "budget.min_per_second (" + rate(rt.budget_min_per_second) +
                  ") is so high that the budget does not limit retries below that traffic: in "
                  "an outage every failed request is retried, multiplying the load on a failing "
                  "upstream; keep it low (default 10)");
  }
  // 2. Attempts that cannot all run within the route timeout.
  if (rt.attempts >= 2 && rt.per_try_timeout_ms > 0 && r.timeout_ms > 0 &&
      static_cast<std::uint64_t>(rt.attempts) * rt.per_try_timeout_ms > r.timeout_ms) {
    lint.warn(p + ".per_try_timeout",
              "attempts (" + std::to_string(rt.attempts) + ") x per_try_timeout (" +
                  duration(rt.per_try_timeout_ms) + ") = " +
                  duration(rt.attempts * rt.per_try_timeout_ms) +
                  " is longer than the route timeout (" + duration(r.timeout_ms) +
                  "): the route timeout ends the request before every attempt can run; lower "
                  "per_try_timeout or attempts, or raise the route timeout");
  }
  // 3. Non-idempotent requests replayed after a timeout.
  if (rt.methods == "all" && rt.per_try_timeout_ms > 0 &&
      std::find(rt.on.begin(), rt.on.end(), "timeout") != rt.on.end()) {
    lint.warn(p + ".methods",
              "methods: all with retry on timeout replays non-idempotent requests (POST, "
              "PATCH, ...) whose first attempt may still be running on the upstream: they may "
              "execute twice; use methods: idempotent or remove timeout from retry.on");
  }
}

struct RouteUse {
  const RouteConfig* route;
  std::string path;
};

void lint_upstream(Lint& lint, const UpstreamConfig& u, const std::string& up,
                   const std::vector<RouteUse>& routes) {
  // 4. A breaker whose rate trips need more calls per window than the routes can send.
  if (u.circuit_breaker && !routes.empty()) {
    const CircuitBreakerConfig& cb = *u.circuit_breaker;
    double total = 0;
    bool capped = true;
    std::string names;
    for (const auto& use : routes) {
      auto cap = route_cap(*use.route);
      if (!cap) {
        capped = false;
        break;
      }
      total += *cap;
      names += (names.empty() ? "'" : ", '") + use.route->name + "'";
    }
    double per_window = total * static_cast<double>(cb.window_ms) / 1000.0;
    if (capped && per_window < cb.min_requests) {
      lint.warn(up + ".circuit_breaker.min_requests",
                "min_requests (" + std::to_string(cb.min_requests) +
                    ") is never reached within window (" + duration(cb.window_ms) +
                    "): the routes using this upstream (" + names + ") are rate limited to " +
                    rate(total) + " in total, at most " + number(per_window) +
                    " requests per window, so the breaker never trips on failure_rate or "
                    "slow_call (only on consecutive_failures); lower min_requests or lengthen "
                    "window");
    }
  }
  // 6. A health check slower than the breaker.
  if (u.circuit_breaker && u.health_check &&
      u.health_check->interval_ms > u.circuit_breaker->open_for_ms) {
    lint.warn(up + ".health_check.interval",
              "interval (" + duration(u.health_check->interval_ms) +
                  ") is longer than circuit_breaker.open_for (" +
                  duration(u.circuit_breaker->open_for_ms) +
                  "): the breaker lets client requests through to probe an ejected endpoint "
                  "before the health check has looked at it again; set interval below open_for");
  }
  // 8. TLS without verification.
  if (u.tls && !u.tls->verify) {
    lint.warn(up + ".tls.verify",
              "verify is false: the upstream's certificate is not checked, so anyone on the "
              "path can pose as it (and read what is sent); set ca to the CA that signed it "
              "instead");
  }
  // 9. HTTP health probes against an HTTP/2 upstream.
  if (u.h2 && u.health_check && u.health_check->type == "http") {
    lint.warn(up + ".health_check.type",
              "http probes speak HTTP/1.1, while this upstream has protocol: h2: a backend that "
              "only speaks HTTP/2 (a gRPC server) fails every probe and is ejected; use type: "
              "tcp unless the endpoints answer HTTP/1.1 too");
  }
  // 7. A shedding queue that holds requests past their route timeout.
  if (u.load_shedding && u.load_shedding->enforce && u.load_shedding->queue_size > 0) {
    const std::uint64_t wait = u.load_shedding->queue_timeout_ms;
    for (const auto& use : routes) {
      const RouteConfig& r = *use.route;
      if (r.timeout_ms == 0 || wait <= r.timeout_ms) continue;
      lint.warn(up + ".load_shedding.queue.timeout",
                "queue.timeout (" + duration(wait) + ") is longer than the timeout (" +
                    duration(r.timeout_ms) + ") of route '" + r.name + "' (" + use.path +
                    "): its requests can wait in the queue until the route times out (504) "
                    "instead of being shed at once (503, Retry-After); set queue.timeout below "
                    "the route timeout");
    }
  }
}

}  // namespace

std::vector<std::string> lint_config(const Config& config) {
  Lint lint(config);
  std::vector<std::vector<RouteUse>> uses(config.upstreams.size());
  for (std::size_t li = 0; li < config.listeners.size(); ++li) {
    const auto& routes = config.listeners[li].routes;
    for (std::size_t ri = 0; ri < routes.size(); ++ri) {
      const RouteConfig& r = routes[ri];
      const std::string path = route_path(li, ri);
      if (r.retry) lint_retry(lint, r, path);
      // 5. A bucket smaller than one second of its rate.
      if (r.rate_limit && r.rate_limit->burst < r.rate_limit->rate_per_second) {
        const RateLimitConfig& rl = *r.rate_limit;
        lint.warn(path + ".rate_limit.burst",
                  "burst (" + number(rl.burst) + ") is less than one second of rate (" +
                      rate(rl.rate_per_second) +
                      "): clients within the rate but not evenly spaced are refused with 429; "
                      "set burst to at least " + number(std::ceil(rl.rate_per_second)));
      }
      for (std::size_t ui = 0; ui < config.upstreams.size(); ++ui)
        if (config.upstreams[ui].name == r.upstream) uses[ui].push_back({&r, path});
    }
  }
  for (std::size_t ui = 0; ui < config.upstreams.size(); ++ui)
    lint_upstream(lint, config.upstreams[ui], "upstreams[" + std::to_string(ui) + "]", uses[ui]);
  // 9. A listener certificate that has expired or expires within 14 days.
  const auto now = static_cast<std::int64_t>(std::time(nullptr));
  for (std::size_t li = 0; li < config.listeners.size(); ++li) {
    const auto& tls = config.listeners[li].tls;
    if (!tls || !tls->context || tls->context->not_after() == 0) continue;
    std::int64_t left = tls->context->not_after() - now;
    std::string path = "listeners[" + std::to_string(li) + "].tls.cert";
    if (left <= 0)
      lint.warn(path, "the certificate in '" + tls->cert +
                          "' has expired: clients that verify it refuse the handshake");
    else if (left < 14 * 86400)
      lint.warn(path, "the certificate in '" + tls->cert + "' expires in " +
                          std::to_string(left / 86400) + " day(s), " +
                          std::to_string(left % 86400 / 3600) + " hour(s): renew it");
  }
  return lint.take();
}

}  // namespace bulwark
