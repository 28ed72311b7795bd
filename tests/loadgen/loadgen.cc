// bulwark-load: an open-loop HTTP/1.1 load generator for testing load shedding: a command line
// over bulwark-drill's generator (proxy/drill/load.h; docs/drills.md), with one constant rate
// and the per-request CSV the load-shedding experiments read. Requests start on a fixed schedule -- request i at i/R seconds, started by a
// 1 ms timer tick that starts every request whose time has passed (and after every poll for
// I/O, which the tick triggers: responses free their connections first) -- whatever the
// responses do.
// Each request takes an idle keep-alive connection or opens a new one; when --max-conns
// connections are already open it is not sent and counts as "client-overflow". Latency is
// measured from the scheduled start (corrected for coordinated omission), so a lagging
// generator shows up as latency, never as a lower offered rate. Bodies of any size, with
// Content-Length, chunked or ending at EOF, are read and discarded.
//
// Usage: bulwark-load --url http://HOST:PORT/PATH --rate R --duration S
//          [--timeout-ms MS] [--max-conns N] [--header 'Name: value']...
//          [--mix critical=0.1,normal=0.5,sheddable=0.4] [--priority-header x-priority]
//          [--seed N] [--out FILE]
//   --rate R          requests per second, evenly spaced (float)
//   --duration S      seconds of schedule (float); the run then waits for what is in flight
//   --timeout-ms MS   per request, from its scheduled start (default 5000); on expiry the
//                     connection is closed (with RST) and the outcome is "timeout"
//   --max-conns N     connections open at once (default 2000)
//   --header H        an extra request header (repeatable); Host defaults to the URL's
//   --mix M           each request gets one priority drawn with these weights (PRNG seeded by
//                     --seed, default 1) and sent in --priority-header (default x-priority);
//                     without --mix no priority header is sent
//   --out FILE        CSV, a header line then one line per request in schedule order:
//                     sched_ms,latency_us,status,reason,priority
//                     status is 0 when no response came; reason is the x-bulwark-reason
//                     response header, or the client outcome (timeout; reset for a refused,
//                     reset or unparsable connection; client-overflow), empty for a plain
//                     response.
// stdout gets one JSON line at the end:
//   {"offered":..,"sent":..,"completed":..,"status":{"200":..,"0":..},"reasons":{..},
//    "p50_us":..,"p99_us":..,"priority":{"NAME":{"sent":..,"ok":..,"p50_us":..,"p99_us":..}},
//    "achieved_rate":..,"duration_s":..,"max_start_lag_us":..}
// offered = requests scheduled; sent = offered minus client-overflow; completed = responses
// received; percentiles are of 2xx latencies (null when none); "priority" has one entry per
// --mix name ("none" without --mix), its "sent" also without client-overflow;
// achieved_rate = responses completed within the scheduled duration / the duration;
// max_start_lag_us = how late the generator started a request (up to ~1 ms is the tick).
// Latencies include up to 1 ms of tick granularity (a request may wait for the next tick).
// SIGINT stops scheduling; what is in flight is awaited and the results are written.
#include <sys/resource.h>
#include <uv.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "drill/http_get.h"
#include "drill/load.h"
#include "drill/runner.h"
#include "drill/scenario.h"
#include "results.h"

namespace {

namespace drill = bulwark::drill;

[[noreturn]] void usage(const char* why) {
  if (why) std::fprintf(stderr, "bulwark-load: %s\n", why);
  std::fprintf(stderr,
               "usage: bulwark-load --url http://HOST:PORT/PATH --rate R --duration S\n"
               "         [--timeout-ms MS] [--max-conns N] [--header 'Name: value']...\n"
               "         [--mix NAME=W,...] [--priority-header NAME] [--seed N] [--out FILE]\n");
  std::exit(2);
}

bool parse_double(const char* s, double& out) {
  char* end = nullptr;
  out = std::strtod(s, &end);
  return end != s && *end == '\0' && std::isfinite(out);
}

bool parse_uint(const char* s, std::uint64_t& out) {
  if (*s < '0' || *s > '9') return false;
  char* end = nullptr;
  out = std::strtoull(s, &end, 10);
  return *end == '\0';
}

drill::LoadGenerator* g_gen = nullptr;

}  // namespace

int main(int argc, char** argv) {
  drill::Scenario s;
  double rate = 0, duration = 0;
  std::uint64_t timeout_ms = 5000, max_conns = 2000;
  std::string url, mix, out;
  s.connections = max_conns;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") usage(nullptr);
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    if (a == "--url") {
      url = v;
    } else if (a == "--rate") {
      if (!parse_double(v, rate) || rate <= 0) usage("--rate takes a number > 0");
    } else if (a == "--duration") {
      if (!parse_double(v, duration) || duration <= 0) usage("--duration takes seconds > 0");
    } else if (a == "--timeout-ms") {
      if (!parse_uint(v, timeout_ms) || timeout_ms == 0) usage("--timeout-ms takes milliseconds > 0");
    } else if (a == "--max-conns") {
      if (!parse_uint(v, max_conns) || max_conns == 0) usage("--max-conns takes a number > 0");
    } else if (a == "--header") {
      std::string h = v;
      auto colon = h.find(':');
      if (colon == std::string::npos || colon == 0) usage("--header takes 'Name: value'");
      std::size_t value = h.find_first_not_of(' ', colon + 1);
      s.headers.emplace_back(h.substr(0, colon), value == std::string::npos ? "" : h.substr(value));
    } else if (a == "--mix") {
      mix = v;
    } else if (a == "--priority-header") {
      s.priority_header = v;
    } else if (a == "--seed") {
      if (!parse_uint(v, s.seed)) usage("--seed takes a number");
    } else if (a == "--out") {
      out = v;
    } else {
      usage(("unknown argument " + a).c_str());
    }
  }
  if (url.empty() || rate <= 0 || duration <= 0) usage("--url, --rate and --duration are required");
  if (rate * duration > 50e6) usage("more than 50 million requests: lower --rate or --duration");
  std::string error;
  if (!drill::parse_url(url, s.target, error)) usage(("--url: " + error).c_str());
  s.timeout_s = static_cast<double>(timeout_ms) / 1000;
  s.connections = max_conns;
  s.phases.push_back({"load", duration, rate, rate});
  std::vector<std::string> priorities;
  if (!mix.empty()) {
    std::size_t at = 0;
    double sum = 0;
    while (at <= mix.size()) {
      auto comma = mix.find(',', at);
      std::string item = mix.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
      auto eq = item.find('=');
      double w = 0;
      if (eq == std::string::npos || eq == 0 || !parse_double(item.c_str() + eq + 1, w) || w < 0)
        usage("--mix takes NAME=WEIGHT,...");
      s.priority_mix.emplace_back(item.substr(0, eq), w);
      priorities.push_back(item.substr(0, eq));
      sum += w;
      if (comma == std::string::npos) break;
      at = comma + 1;
    }
    if (sum <= 0 || priorities.size() > 255) usage("--mix needs 1..255 names and a weight > 0");
  } else {
    priorities.push_back("none");
  }

  drill::LoadGenerator::Options options;
  if (!drill::resolve(s.target.host, s.target.port, options.address, error)) {
    std::fprintf(stderr, "bulwark-load: %s\n", error.c_str());
    return 2;
  }
  options.timeout_s = s.timeout_s;
  options.max_connections = s.connections;
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  std::signal(SIGPIPE, SIG_IGN);

  std::vector<drill::Record> records = drill::build_schedule(s);
  uv_loop_t* loop = uv_default_loop();
  drill::LoadGenerator gen(loop, options, records, drill::build_requests(s),
                           std::max<std::size_t>(s.priority_mix.size(), 1), "", 0);
  g_gen = &gen;
  uv_signal_t sigint;
  uv_signal_init(loop, &sigint);
  uv_signal_start(&sigint, [](uv_signal_t*, int) {
    std::fprintf(stderr, "bulwark-load: interrupted; waiting for the requests in flight\n");
    g_gen->stop_scheduling();
  }, SIGINT);
  uv_unref(reinterpret_cast<uv_handle_t*>(&sigint));
  std::uint64_t start = uv_hrtime(), stopped_ns = 0;
  gen.start(start, [&] {
    stopped_ns = uv_hrtime() - start;
    gen.shutdown();
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint), nullptr);
  });
  uv_run(loop, UV_RUN_DEFAULT);

  // The generator's records in bulwark-load's terms: client outcomes become reasons.
  std::vector<std::string> reasons = gen.reasons();
  auto add_reason = [&](const char* name) {
    reasons.emplace_back(name);
    return static_cast<std::uint16_t>(reasons.size() - 1);
  };
  const std::uint16_t timeout_id = add_reason("timeout"), reset_id = add_reason("reset"),
                      overflow_id = add_reason("client-overflow");
  std::uint64_t offered = gen.schedule_end();
  std::uint64_t window_ns = static_cast<std::uint64_t>(duration * 1e9);
  if (offered < records.size()) window_ns = std::min(window_ns, stopped_ns);
  std::vector<loadgen::Outcome> outcomes(offered);
  std::uint64_t in_window = 0;
  for (std::uint64_t i = 0; i < offered; ++i) {
    const drill::Record& r = records[i];
    loadgen::Outcome& o = outcomes[i];
    o.latency_us = r.latency_us;
    o.status = r.status;
    o.priority = r.priority;
    o.reason = r.reason;
    if (r.status == 0)
      o.reason = r.outcome == drill::Outcome::timeout    ? timeout_id
                 : r.outcome == drill::Outcome::overflow ? overflow_id
                                                         : reset_id;
    if (r.status != 0 && r.sched_ns + r.latency_us * 1000ull <= window_ns) ++in_window;
  }
  loadgen::Report rep;
  rep.offered = offered;
  rep.outcome = [&](std::uint64_t i) -> const loadgen::Outcome& { return outcomes[i]; };
  rep.sched_ms = [&](std::uint64_t i) { return static_cast<double>(records[i].sched_ns) / 1e6; };
  rep.reasons = &reasons;
  rep.priorities = &priorities;
  rep.with_priority = !mix.empty();
  rep.overflow_reason = overflow_id;
  rep.csv_path = out;
  rep.window_ns = window_ns;
  rep.in_window = in_window;
  rep.max_lag_ns = gen.max_start_lag_us() * 1000;
  loadgen::write_results(rep);
  uv_loop_close(loop);
  return 0;
}
