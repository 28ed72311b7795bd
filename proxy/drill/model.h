// What a drill run produced, in the form the report (report_html.cc) and the JSON summary
// (report_json.cc) are written from. Filled by the runner (runner.cc) after the load has
// ended; every per-second vector has one entry per second of the run (index 0 = the first
// second of the schedule), NaN where there is nothing to show (no completion that second, no
// scrape).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bulwark::drill {

// How each request ended, the classes the report stacks and counts. Order = legend order.
enum class Outcome : std::uint8_t {
  ok,            // 1xx-3xx from the backend
  shed,          // 503 x-bulwark-reason: overloaded
  rate_limited,  // 429 x-bulwark-reason: rate-limited
  circuit_open,  // 503 x-bulwark-reason: circuit-open
  local_error,   // any other reply made by Bulwark (x-bulwark-reason present)
  upstream_4xx,  // 4xx from the backend
  upstream_5xx,  // 5xx from the backend
  timeout,       // no response within the scenario's timeout (client side)
  conn_error,    // connect error, reset, unparsable response
  overflow,      // not sent: every allowed connection was busy (the generator's own limit)
};
inline constexpr int kOutcomes = 10;
const char* outcome_name(Outcome o);  // "ok", "shed", "rate-limited", ... (report_json.cc)
// "1234567" -> "1,234,567" (a run of digits; report_json.cc).
std::string group_thousands(const std::string& digits);

// One line of a time-series chart.
struct Series {
  std::string name;             // legend text, e.g. "limit (be)"
  std::vector<double> values;   // per second; NaN = no value
};

// One chart of control state scraped from Bulwark's /metrics.
struct ControlChart {
  std::string title;            // e.g. "Concurrency limit and in-flight"
  std::string unit;             // e.g. "requests", "per second", "endpoints"
  std::vector<Series> series;
};

// A span of the run drawn as a shaded band on every chart (a fault) or a divider (a phase).
struct Span {
  std::string name;
  double from_s = 0, to_s = 0;  // seconds from the start of the schedule
};

struct ObjectiveResult {
  std::string text;       // what was asked, e.g. "success ratio of critical >= 0.99"
  double measured = 0;    // NaN when it could not be measured (then it failed)
  bool passed = false;
  std::string detail;     // why it failed, or context ("3,120 of 3,150 requests")
};

struct LatencySummary {  // milliseconds, of successful (ok) responses; NaN when none
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
};

struct PrioritySummary {
  std::string name;                // "critical", ... or "all"
  std::uint64_t sent = 0;          // scheduled and sent (overflow excluded)
  std::uint64_t counts[kOutcomes] = {};
  double success_ratio = 0;        // ok / scheduled, overflow counted as not ok (NaN if none)
  LatencySummary latency;
};

struct Report {
  std::string scenario;            // scenario name
  std::string description;
  std::string file;                // the scenario file
  std::string target;              // URL the load went to
  std::string started_at;          // ISO 8601 UTC
  double duration_s = 0;           // scheduled duration
  double offered_rate_avg = 0;     // requests scheduled / duration
  double achieved_rate = 0;        // responses (any) completed within the schedule / duration
  std::int64_t max_start_lag_us = 0;  // how late the generator started a request, worst case
  bool scraped = false;            // whether /metrics was scraped
  std::uint64_t scrape_errors = 0;

  // Per second (index = second of the schedule; requests are counted in the second they
  // were scheduled to start, so a slow second shows as latency, not as a gap).
  std::vector<double> offered;                 // requests scheduled to start
  std::vector<double> outcomes[kOutcomes];     // of those, how many ended each way
  std::vector<double> p50_ms, p99_ms, max_ms;  // latency of the ok ones

  std::vector<ControlChart> controls;          // may be empty (no metrics URL)
  std::vector<Span> phases, faults;
  std::vector<PrioritySummary> priorities;     // "all" first, then one per priority of the mix
  std::vector<std::pair<std::string, std::uint64_t>> statuses;  // "200" -> count; "0" = none
  std::vector<std::pair<std::string, std::uint64_t>> reasons;   // x-bulwark-reason -> count
  std::vector<ObjectiveResult> objectives;
  bool passed = true;                          // every objective passed
};

// report_html.cc: one self-contained HTML document (inline CSS and SVG, no script from
// elsewhere, no external fetch).
std::string render_html(const Report& r);
// report_json.cc: the JSON summary (every field above, series as arrays, NaN as null).
std::string render_json(const Report& r);

}  // namespace bulwark::drill
