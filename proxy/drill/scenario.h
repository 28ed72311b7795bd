// A drill scenario: the load to offer, the faults to schedule, what to scrape and the
// objectives that decide pass or fail. Read from YAML (docs/drills.md has the reference);
// `${name}` in the file is replaced, before parsing, by a --set value or else the environment
// variable of that name; `${name:-default}` falls back to `default`.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "drill/model.h"

namespace bulwark::drill {

struct Url {
  std::string host;  // as written (an IP literal or a name)
  std::uint16_t port = 80;
  std::string path = "/";  // path and query
  std::string text;        // the whole URL, for messages
};
// "http://HOST[:PORT][/PATH]"; false with `error` set otherwise.
bool parse_url(const std::string& text, Url& out, std::string& error);

struct Phase {
  std::string name;
  double duration_s = 0;
  double rate = 0;     // requests per second at the phase start
  double rate_to = 0;  // at its end (= rate unless a ramp)
};

// A fault action: an HTTP GET (e.g. bulwark-testd's /__mode) or a shell command. Either is
// given up after `timeout_s` (a command is killed, with its process group): a fault action
// never holds up the end of a run for longer.
struct Action {
  std::optional<Url> get;
  std::string run;
  double timeout_s = 0;  // 0: the default, 5 s for a GET, 30 s for a command
  bool empty() const { return !get && run.empty(); }
  std::string describe() const;
};

struct Fault {
  std::string name;
  double at_s = 0, duration_s = 0;
  Action start, end;
};

struct WeightedPath {
  std::string path;
  double weight = 1;
};

// One line of a control chart: the sum (or max/min) over the samples of `metric` whose
// labels include `labels`; with `rate`, its increase per second (a counter).
struct ControlSeries {
  std::string name, metric;
  std::map<std::string, std::string> labels;
  enum class Agg { sum, max, min } agg = Agg::sum;
  bool rate = false;
};
struct ControlSpec {
  std::string title, unit;
  std::vector<ControlSeries> series;
};

struct Objective {
  // success_ratio | ratio (needs outcome) | p50_ms | p90_ms | p99_ms | p999_ms | max_ms |
  // ok_rate | achieved_rate | recovery_s (needs fault)
  std::string metric;
  std::optional<Outcome> outcome;  // for `ratio`
  std::string priority;            // "" = every request
  std::string phase;               // "" = the whole run
  std::string fault;               // for recovery_s
  double threshold = 0.95;         // recovery_s: per-second success ratio that counts as recovered
  double hold_s = 3;               // recovery_s: for this many seconds in a row
  std::optional<double> min, max;
  std::string text;  // as shown in the report
};

struct Scenario {
  std::string file, name, description;
  Url target;
  std::optional<Url> metrics;
  double timeout_s = 5;
  std::uint64_t connections = 1000;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string priority_header = "x-priority";
  std::vector<std::pair<std::string, double>> priority_mix;  // name -> weight
  std::string key_header;
  std::uint64_t key_count = 0;
  std::vector<WeightedPath> paths;  // empty: the target's path
  std::vector<Phase> phases;
  std::vector<Fault> faults;
  std::vector<ControlSpec> controls;  // empty: the default set (when metrics is given)
  std::vector<Objective> objectives;
  std::uint64_t seed = 1;

  double duration_s() const;
  // Scheduled requests per second at `t` seconds from the start (0 after the last phase).
  double rate_at(double t) const;
};

// Replaces every ${name} in `text`; undefined names are reported as FILE:LINE:COL errors.
std::string substitute(const std::string& file, const std::string& text,
                       const std::map<std::string, std::string>& vars,
                       std::vector<std::string>& errors);

// Reads a scenario; on failure returns nullopt and fills `errors` (every problem found, each
// "FILE:LINE:COL: path: message").
std::optional<Scenario> load_scenario(const std::string& file,
                                      const std::map<std::string, std::string>& vars,
                                      std::vector<std::string>& errors);

// The charts drawn when a scenario names a metrics URL and no `controls`.
std::vector<ControlSpec> default_controls();

}  // namespace bulwark::drill
