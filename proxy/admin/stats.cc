#include "admin/stats.h"

#include <prometheus/metric_family.h>

#include <iterator>
#include <limits>
#include <map>
#include <string>

#include "admin/access_log.h"
#include "generation.h"
#include "http/grpc.h"
#include "upstream/upstream_state.h"

namespace bulwark {

const char* h2_error_name(H2Error e) {
  static const char* const kNames[] = {"rapid_reset",    "continuation_flood",
                                       "header_list_too_large", "too_many_streams",
                                       "settings_flood", "ping_flood",
                                       "window_stall",   "protocol_error"};
  static_assert(sizeof kNames / sizeof kNames[0] == kH2ErrorCount);
  return kNames[static_cast<int>(e)];
}

namespace pm = prometheus;

RedisNodeStats& WorkerStats::redis_node(const std::string& address) {
  std::size_t n = redis_node_count.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < n; ++i)
    if (redis_nodes[i].address == address) return redis_nodes[i];
  if (n == kRedisNodes) return redis_nodes[kRedisNodes - 1];
  RedisNodeStats& slot = redis_nodes[n];
  slot.address = address;
  slot.published.store(true, std::memory_order_release);
  redis_node_count.store(n + 1, std::memory_order_release);
  return slot;
}

std::map<std::string, RedisNodeTotals> redis_node_totals(const std::vector<const WorkerStats*>& workers) {
  std::map<std::string, RedisNodeTotals> out;
  for (const WorkerStats* w : workers) {
    std::size_t count = w->redis_node_count.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < count; ++i) {
      const RedisNodeStats& n = w->redis_nodes[i];
      if (!n.published.load(std::memory_order_acquire)) continue;
      RedisNodeTotals& t = out[n.address];
      t.up += n.usable.get();
      t.errors += n.errors.get();
      t.latency.push_back(&n.latency);
    }
  }
  return out;
}

void DurationHistogram::observe_ns(std::uint64_t ns) {
  double seconds = static_cast<double>(ns) / 1e9;
  std::size_t i = 0;
  while (i < kDurationBuckets.size() && seconds > kDurationBuckets[i]) ++i;
  buckets[i].add();
  sum_ns.add(ns);
}

StatsCollector::StatsCollector(std::shared_ptr<const Generation> generation,
                               std::vector<const WorkerStats*> workers,
                               const ProcessStats& process)
    : generation_(std::move(generation)), workers_(std::move(workers)), process_(process) {}

namespace {

pm::MetricFamily family(const char* name, const char* help, pm::MetricType type) {
  pm::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  return f;
}

pm::ClientMetric counter(std::vector<pm::ClientMetric::Label> labels, double v) {
  pm::ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = v;
  return m;
}

pm::ClientMetric gauge(std::vector<pm::ClientMetric::Label> labels, double v) {
  pm::ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = v;
  return m;
}

// The sum of several histograms of the same buckets (one per worker) as one sample.
pm::ClientMetric histogram(std::vector<pm::ClientMetric::Label> labels,
                           const std::vector<const DurationHistogram*>& parts) {
  pm::ClientMetric h;
  h.label = std::move(labels);
  std::uint64_t cumulative = 0, sum_ns = 0;
  for (std::size_t b = 0; b <= kDurationBuckets.size(); ++b) {
    for (const DurationHistogram* part : parts) cumulative += part->buckets[b].get();
    pm::ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound = b < kDurationBuckets.size() ? kDurationBuckets[b]
                                                     : std::numeric_limits<double>::infinity();
    h.histogram.bucket.push_back(bucket);
  }
  for (const DurationHistogram* part : parts) sum_ns += part->sum_ns.get();
  h.histogram.sample_count = cumulative;
  h.histogram.sample_sum = static_cast<double>(sum_ns) / 1e9;
  return h;
}

const char* const kOutcomeNames[] = {"success", "failure",         "timeout",
                                     "reset",   "connect_failure", "protocol_error"};
static_assert(std::size(kOutcomeNames) == static_cast<std::size_t>(UpstreamOutcome::count_));
const char* const kConnectNames[] = {"success", "failure", "timeout"};

}  // namespace

std::vector<pm::MetricFamily> StatsCollector::Collect() const {
  std::vector<pm::MetricFamily> out;
  const Generation& g = *generation_;

  auto info = family("bulwark_build_info", "Bulwark build information.", pm::MetricType::Gauge);
  info.metric.push_back(gauge({{"version", BULWARK_VERSION}}, 1));
  out.push_back(std::move(info));

  auto requests = family("bulwark_requests_total", "Requests answered, by final status code.",
                         pm::MetricType::Counter);
  auto durations =
      family("bulwark_request_duration_seconds",
             "Time from request head received to response complete.", pm::MetricType::Histogram);
  auto replies = family("bulwark_local_replies_total", "Responses made by Bulwark itself.",
                        pm::MetricType::Counter);
  auto faults = family("bulwark_faults_injected_total",
                       "Faults injected by a route's fault block (or forced by x-bulwark-fault), "
                       "by kind: delay, abort.",
                       pm::MetricType::Counter);
  auto conns =
      family("bulwark_downstream_connections", "Open client connections.", pm::MetricType::Gauge);
  auto tls_handshakes =
      family("bulwark_tls_handshakes_total",
             "TLS handshakes, by side (downstream: on a listener; upstream: to an upstream's "
             "endpoints) and result.",
             pm::MetricType::Counter);
  auto tls_expiry = family("bulwark_tls_certificate_expiry_seconds",
                           "When the certificate a TLS listener serves expires (notAfter, Unix "
                           "seconds).",
                           pm::MetricType::Gauge);
  auto h2_streams = family("bulwark_http2_streams",
                           "Open HTTP/2 streams, by side (downstream: clients' streams on a "
                           "listener) and name.",
                           pm::MetricType::Gauge);
  auto h2_errors = family("bulwark_http2_protocol_errors_total",
                          "HTTP/2 connections Bulwark ended for a protocol violation or an "
                          "attack, by side, name and reason.",
                          pm::MetricType::Counter);
  auto retries = family("bulwark_retries_total", "Retries sent, by what was retried.",
                        pm::MetricType::Counter);
  auto decisions =
      family("bulwark_ratelimit_decisions_total", "Rate limit decisions.", pm::MetricType::Counter);
  auto refused = family("bulwark_accepts_refused_total",
                        "Client connections closed without being served: fd_limit (Bulwark out "
                        "of file descriptors; answered 503 overloaded) or max_connections (the "
                        "listener's limit; closed).",
                        pm::MetricType::Counter);
  auto exhausted = family("bulwark_retry_budget_exhausted_total",
                          "Failures returned as they were because the retry budget was spent.",
                          pm::MetricType::Counter);

  for (std::size_t li = 0; li < g.config->listeners.size(); ++li) {
    const auto& l = g.config->listeners[li];
    std::int64_t open = 0;
    for (const auto& w : g.workers) open += w.listeners[li]->connections.get();
    conns.metric.push_back(gauge({{"listener", l.name}}, static_cast<double>(open)));
    if (l.tls) {
      for (int r = 0; r < 2; ++r) {
        std::uint64_t n = 0;
        for (const auto& w : g.workers) n += w.listeners[li]->tls_handshakes[r].get();
        tls_handshakes.metric.push_back(counter(
            {{"side", "downstream"}, {"name", l.name}, {"result", r == 0 ? "success" : "failure"}},
            static_cast<double>(n)));
      }
      if (l.tls->context)
        tls_expiry.metric.push_back(
            gauge({{"name", l.name}}, static_cast<double>(l.tls->context->not_after())));
    }
    if (l.h2 || l.h2c) {
      std::int64_t streams = 0;
      for (const auto& w : g.workers) streams += w.listeners[li]->h2_streams.get();
      h2_streams.metric.push_back(gauge({{"side", "downstream"}, {"name", l.name}},
                                        static_cast<double>(streams)));
      for (int r = 0; r < kH2ErrorCount; ++r) {
        std::uint64_t n = 0;
        for (const auto& w : g.workers) n += w.listeners[li]->h2_errors[r].get();
        h2_errors.metric.push_back(counter({{"side", "downstream"},
                                            {"name", l.name},
                                            {"reason", h2_error_name(static_cast<H2Error>(r))}},
                                           static_cast<double>(n)));
      }
    }
    static const char* const kRefusals[] = {"fd_limit", "max_connections"};
    for (int r = 0; r < static_cast<int>(AcceptRefusal::count_); ++r) {
      std::uint64_t n = 0;
      for (const auto& w : g.workers) n += w.listeners[li]->accepts_refused[r].get();
      refused.metric.push_back(
          counter({{"listener", l.name}, {"reason", kRefusals[r]}}, static_cast<double>(n)));
    }

    for (std::size_t ri = 0; ri <= l.routes.size(); ++ri) {
      std::string route = ri < l.routes.size() ? l.routes[ri].name : "";
      std::string upstream = ri < l.routes.size() ? l.routes[ri].upstream : "";
      for (int code = 100; code <= 599; ++code) {
        std::uint64_t n = 0;
        for (const auto& w : g.workers) n += w.routes[li][ri]->codes[code - 100].get();
        if (n == 0) continue;
        requests.metric.push_back(counter({{"listener", l.name},
                                           {"route", route},
                                           {"upstream", upstream},
                                           {"code", std::to_string(code)}},
                                          static_cast<double>(n)));
      }
      for (int r = 0; r < kReasonCount; ++r) {
        std::uint64_t n = 0;
        for (const auto& w : g.workers) n += w.routes[li][ri]->local_replies[r].get();
        if (n == 0) continue;
        replies.metric.push_back(counter(
            {{"route", route}, {"reason", std::string(reason_name(static_cast<Reason>(r)))}},
            static_cast<double>(n)));
      }
      if (ri == l.routes.size()) continue;
      if (l.routes[ri].fault) {
        for (int k = 0; k < 2; ++k) {
          std::uint64_t n = 0;
          for (const auto& w : g.workers) n += w.routes[li][ri]->faults[static_cast<std::size_t>(k)].get();
          faults.metric.push_back(counter({{"route", route}, {"kind", k ? "abort" : "delay"}},
                                          static_cast<double>(n)));
        }
      }
      if (l.routes[ri].rate_limit) {
        std::string scope = l.routes[ri].rate_limit->scope;
        bool global = scope == "global";
        // limited_redis_failure only where Redis is asked.
        std::size_t kinds = global ? kRateLimitDecisions : 2;
        for (std::size_t d = 0; d < kinds; ++d) {
          std::size_t index = ratelimit_index(global, static_cast<RateLimitDecision>(d));
          std::uint64_t n = 0;
          for (const auto& w : g.workers) n += w.routes[li][ri]->ratelimit[index].get();
          decisions.metric.push_back(counter(
              {{"route", route}, {"scope", scope}, {"decision", kRateLimitDecisionNames[d]}},
              static_cast<double>(n)));
        }
      }
      if (l.routes[ri].retry) {
        static const char* const kinds[] = {"connect-failure", "reset", "timeout"};
        for (int r = 0; r < kRetryReasons; ++r) {
          std::uint64_t n = 0;
          for (const auto& w : g.workers)
            n += w.routes[li][ri]->retries[static_cast<std::size_t>(r)].get();
          if (n == 0 && r >= 3) continue;
          std::string reason = r < 3     ? kinds[r]
                               : r < 503 ? std::to_string(r - 3 + 100)
                                         : grpc_retry_name(r - 503);
          retries.metric.push_back(
              counter({{"route", route}, {"reason", reason}}, static_cast<double>(n)));
        }
        std::uint64_t n = 0;
        for (const auto& w : g.workers)
          n += w.routes[li][ri]->retry_budget_exhausted.get();
        exhausted.metric.push_back(counter({{"route", route}}, static_cast<double>(n)));
      }
      std::vector<const DurationHistogram*> parts;
      for (const auto& w : g.workers) parts.push_back(&w.routes[li][ri]->duration);
      durations.metric.push_back(histogram({{"route", route}, {"upstream", upstream}}, parts));
    }
  }
  out.push_back(std::move(requests));
  out.push_back(std::move(durations));
  out.push_back(std::move(replies));
  out.push_back(std::move(faults));
  out.push_back(std::move(retries));
  out.push_back(std::move(decisions));
  out.push_back(std::move(exhausted));

  auto upstream_requests =
      family("bulwark_upstream_requests_total", "Attempts sent to upstream endpoints, by outcome.",
             pm::MetricType::Counter);
  auto inflight = family("bulwark_inflight_requests", "Requests in flight to the upstream.",
                         pm::MetricType::Gauge);
  auto pool =
      family("bulwark_pool_connections", "Pooled upstream connections.", pm::MetricType::Gauge);
  auto connects = family("bulwark_pool_connects_total", "Upstream connection attempts.",
                         pm::MetricType::Counter);
  auto stale = family("bulwark_pool_stale_retries_total",
                      "Requests replayed because a pooled connection was found closed.",
                      pm::MetricType::Counter);
  auto circuit_state =
      family("bulwark_circuit_state",
             "Circuit breaker state per endpoint: 1 for the current state.", pm::MetricType::Gauge);
  auto circuit_transitions =
      family("bulwark_circuit_transitions_total",
             "Circuit breaker transitions, by the state entered.", pm::MetricType::Counter);
  auto panic = family("bulwark_upstream_panic",
                      "1 while the upstream is in panic mode: more than max_ejected of its "
                      "endpoints are ejected, or all of them are.",
                      pm::MetricType::Gauge);
  auto panic_routed = family("bulwark_panic_routed_total",
                             "Attempts sent to an ejected endpoint because the upstream was in "
                             "panic mode.",
                             pm::MetricType::Counter);
  auto healthy =
      family("bulwark_endpoint_healthy",
             "1 while the endpoint is not marked down by health checks.", pm::MetricType::Gauge);
  auto checks =
      family("bulwark_health_checks_total", "Health probes, by result.", pm::MetricType::Counter);
  auto pending = family("bulwark_pending_requests", "Requests waiting for the upstream's bulkhead.",
                        pm::MetricType::Gauge);
  auto shed_limit = family("bulwark_concurrency_limit",
                           "The upstream's adaptive concurrency limit (load_shedding).",
                           pm::MetricType::Gauge);
  auto shed_total = family("bulwark_shed_total",
                           "Requests shed by load shedding (answered 503 overloaded; in shadow "
                           "mode counted only), and retries not made because of it.",
                           pm::MetricType::Counter);
  const int workers = static_cast<int>(workers_.size());
  for (const auto& shared : g.upstreams) {
    const UpstreamState* state = shared.get();
    const std::string& name = state->config().name;
    std::int64_t active = 0, idle = 0;
    std::uint64_t stale_retries = 0;
    std::array<std::uint64_t, static_cast<int>(ConnectResult::count_)> connect_counts{};
    std::array<std::uint64_t, 2> handshakes{};
    std::int64_t h2_open = 0;
    std::array<std::uint64_t, kH2ErrorCount> h2_error_counts{};
    auto endpoints = state->endpoints();
    std::size_t ejected = 0, health_only = 0;
    for (const auto& endpoint : *endpoints) {
      bool unhealthy = endpoint->health_state() == EndpointHealth::unhealthy;
      bool open = endpoint->breaker && endpoint->breaker->state() == BreakerState::open;
      ejected += unhealthy || open;
      health_only += unhealthy && !open;
      if (state->config().health_check) {
        healthy.metric.push_back(gauge({{"upstream", name}, {"endpoint", endpoint->name}},
                                       endpoint->health_state() != EndpointHealth::unhealthy));
        static const char* const kResults[] = {"success", "failure", "timeout"};
        for (int r = 0; r < 3; ++r)
          checks.metric.push_back(counter(
              {{"upstream", name}, {"endpoint", endpoint->name}, {"result", kResults[r]}},
              static_cast<double>(endpoint->health_checks[static_cast<std::size_t>(r)].get())));
      }
      if (const CircuitBreaker* b = endpoint->breaker.get()) {
        BreakerState current = b->state();
        for (BreakerState st :
             {BreakerState::closed, BreakerState::open, BreakerState::half_open}) {
          circuit_state.metric.push_back(gauge(
              {{"upstream", name}, {"endpoint", endpoint->name}, {"state", breaker_state_name(st)}},
              current == st ? 1 : 0));
          circuit_transitions.metric.push_back(counter(
              {{"upstream", name}, {"endpoint", endpoint->name}, {"to", breaker_state_name(st)}},
              static_cast<double>(b->transitions_to(st))));
        }
      }
      for (int o = 0; o < static_cast<int>(UpstreamOutcome::count_); ++o) {
        std::uint64_t n = 0;
        for (int w = 0; w < workers; ++w) n += endpoint->per_worker[w].outcomes[o].get();
        upstream_requests.metric.push_back(counter(
            {{"upstream", name}, {"endpoint", endpoint->name}, {"outcome", kOutcomeNames[o]}},
            static_cast<double>(n)));
      }
      for (int w = 0; w < workers; ++w) {
        const EndpointStats& e = endpoint->per_worker[w];
        active += e.active.get();
        stale_retries += e.stale_retries.get();
        idle += e.idle.get();
        for (int c = 0; c < static_cast<int>(ConnectResult::count_); ++c)
          connect_counts[c] += e.connects[c].get();
        for (int r = 0; r < 2; ++r) handshakes[r] += e.tls_handshakes[r].get();
        h2_open += e.h2_streams.get();
        for (int r = 0; r < kH2ErrorCount; ++r) h2_error_counts[r] += e.h2_errors[r].get();
      }
    }
    if (state->config().circuit_breaker || state->config().health_check) {
      double max_ejected =
          state->config().circuit_breaker ? state->config().circuit_breaker->max_ejected : 0.5;
      PanicMode mode = panic_mode(endpoints->size(), ejected, health_only, max_ejected);
      panic.metric.push_back(gauge({{"upstream", name}}, mode != PanicMode::none));
      panic_routed.metric.push_back(
          counter({{"upstream", name}}, static_cast<double>(state->panic_routed())));
    }
    inflight.metric.push_back(gauge({{"upstream", name}}, static_cast<double>(state->in_flight())));
    if (const LoadShedder* shedder = state->shedder()) {
      shed_limit.metric.push_back(gauge({{"upstream", name}}, shedder->limit()));
      for (Priority p : {Priority::critical, Priority::normal, Priority::sheddable})
        shed_total.metric.push_back(counter({{"upstream", name}, {"priority", priority_name(p)}},
                                            static_cast<double>(shedder->shed(p))));
    }
    pending.metric.push_back(gauge({{"upstream", name}}, static_cast<double>(state->pending())));
    pool.metric.push_back(
        gauge({{"upstream", name}, {"state", "active"}}, static_cast<double>(active)));
    pool.metric.push_back(
        gauge({{"upstream", name}, {"state", "idle"}}, static_cast<double>(idle)));
    stale.metric.push_back(counter({{"upstream", name}}, static_cast<double>(stale_retries)));
    for (int c = 0; c < static_cast<int>(ConnectResult::count_); ++c)
      connects.metric.push_back(counter({{"upstream", name}, {"result", kConnectNames[c]}},
                                        static_cast<double>(connect_counts[c])));
    if (state->config().h2) {
      h2_streams.metric.push_back(
          gauge({{"side", "upstream"}, {"name", name}}, static_cast<double>(h2_open)));
      for (int r = 0; r < kH2ErrorCount; ++r)
        h2_errors.metric.push_back(counter({{"side", "upstream"},
                                            {"name", name},
                                            {"reason", h2_error_name(static_cast<H2Error>(r))}},
                                           static_cast<double>(h2_error_counts[r])));
    }
    if (state->config().tls)
      for (int r = 0; r < 2; ++r)
        tls_handshakes.metric.push_back(
            counter({{"side", "upstream"}, {"name", name}, {"result", r == 0 ? "success" : "failure"}},
                    static_cast<double>(handshakes[r])));
  }
  out.push_back(std::move(upstream_requests));
  out.push_back(std::move(healthy));
  out.push_back(std::move(checks));
  out.push_back(std::move(circuit_state));
  out.push_back(std::move(circuit_transitions));
  out.push_back(std::move(panic));
  out.push_back(std::move(panic_routed));
  out.push_back(std::move(inflight));
  out.push_back(std::move(pending));
  out.push_back(std::move(shed_limit));
  out.push_back(std::move(shed_total));
  out.push_back(std::move(pool));
  out.push_back(std::move(connects));
  out.push_back(std::move(stale));
  out.push_back(std::move(tls_handshakes));
  if (!h2_streams.metric.empty()) {
    out.push_back(std::move(h2_streams));
    out.push_back(std::move(h2_errors));
  }
  out.push_back(std::move(tls_expiry));
  out.push_back(std::move(conns));
  out.push_back(std::move(refused));

  auto dns = family("bulwark_dns_lookups_total",
                    "DNS re-resolutions of upstream host names (every dns_refresh), by result; "
                    "a failure keeps the last answer.",
                    pm::MetricType::Counter);
  for (const auto& state : g.upstreams) {
    const auto& uc = state->config();
    bool names = false;
    for (const auto& e : uc.endpoints) names = names || !e.is_ip();
    if (!names) continue;
    for (int r = 0; r < 2; ++r)
      dns.metric.push_back(counter({{"upstream", uc.name}, {"result", r ? "failure" : "success"}},
                                   static_cast<double>(state->dns_lookups()[static_cast<std::size_t>(r)].get())));
  }
  out.push_back(std::move(dns));
  auto dropped = family("bulwark_access_log_dropped_total",
                        "Access log lines dropped because the log's reader did not keep up "
                        "(backlog above 4 MiB); lines are dropped whole.",
                        pm::MetricType::Counter);
  dropped.metric.push_back(counter(
      {}, static_cast<double>(process_.access_log ? process_.access_log->dropped_lines() : 0)));
  out.push_back(std::move(dropped));
  auto admin_refused = family("bulwark_admin_connections_refused_total",
                              "Admin connections closed at once: admin.max_connections were open.",
                              pm::MetricType::Counter);
  admin_refused.metric.push_back(
      counter({}, static_cast<double>(process_.admin_connections_refused.get())));
  out.push_back(std::move(admin_refused));
  auto reloads = family("bulwark_config_reloads_total",
                        "Configuration reloads (SIGHUP or a change of the config file), by "
                        "result; a failed one leaves the config in effect unchanged.",
                        pm::MetricType::Counter);
  for (int r = 0; r < 2; ++r)
    reloads.metric.push_back(counter({{"result", r ? "failure" : "success"}},
                                     static_cast<double>(process_.reloads[static_cast<std::size_t>(r)].get())));
  out.push_back(std::move(reloads));
  auto last_reload = family("bulwark_config_last_reload_successful",
                            "1 while the config file last read is the config in effect; 0 after "
                            "a refused reload, until a reload succeeds.",
                            pm::MetricType::Gauge);
  last_reload.metric.push_back(gauge({}, process_.last_reload_failed.get() ? 0 : 1));
  out.push_back(std::move(last_reload));
  if (g.config->redis) {
    auto redis = family("bulwark_redis_errors_total",
                        "Redis errors, timeouts and lost connections (global rate limits).",
                        pm::MetricType::Counter);
    std::uint64_t n = 0;
    for (const auto* w : workers_) n += w->redis_errors.get();
    redis.metric.push_back(counter({}, static_cast<double>(n)));
    out.push_back(std::move(redis));
    auto node_errors = family("bulwark_redis_node_errors_total",
                              "Errors, timeouts, lost connections and refused AUTH, per Redis server.",
                              pm::MetricType::Counter);
    auto node_up = family("bulwark_redis_node_up",
                          "Workers that can send to this Redis server now (answered, breaker closed).",
                          pm::MetricType::Gauge);
    auto latency = family("bulwark_redis_request_duration_seconds",
                          "Rate-limit decisions answered by a Redis server, from send to reply.",
                          pm::MetricType::Histogram);
    for (const auto& [address, t] : redis_node_totals(workers_)) {
      node_errors.metric.push_back(counter({{"node", address}}, static_cast<double>(t.errors)));
      node_up.metric.push_back(gauge({{"node", address}}, static_cast<double>(t.up)));
      latency.metric.push_back(histogram({{"node", address}}, t.latency));
    }
    out.push_back(std::move(node_errors));
    out.push_back(std::move(node_up));
    out.push_back(std::move(latency));
    auto replicas = family("bulwark_redis_replicas",
                           "Bulwark replicas sharing the global rate limits (redis.replicas, or "
                           "learned from Redis); each takes 1/replicas of a quota while Redis is out.",
                           pm::MetricType::Gauge);
    std::int64_t most = 0;
    for (const auto* w : workers_) most = std::max<std::int64_t>(most, w->redis_replicas.get());
    replicas.metric.push_back(gauge({}, static_cast<double>(most)));
    out.push_back(std::move(replicas));
  }

  return out;
}

}  // namespace bulwark
