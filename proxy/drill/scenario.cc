#include "drill/scenario.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "config/values.h"
#include "config/yaml_reader.h"

namespace bulwark::drill {
namespace {

std::optional<Outcome> outcome_by_name(const std::string& name) {
  for (int i = 0; i < kOutcomes; ++i)
    if (name == outcome_name(static_cast<Outcome>(i))) return static_cast<Outcome>(i);
  return std::nullopt;
}

// A plain number ("0.99", "250") or, with `percent_ok`, a percentage ("99%").
bool number(const std::string& text, double& out, bool percent_ok) {
  if (text.empty()) return false;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || !std::isfinite(v)) return false;
  std::string rest(end);
  if (rest == "%" && percent_ok) v /= 100;
  else if (!rest.empty()) return false;
  out = v;
  return true;
}

// Seconds from a duration ("250ms", "5s", "2m", "0").
void seconds(const YamlFields& f, const char* key, double& out, bool allow_zero) {
  std::uint64_t ms = 0;
  std::size_t before = f.errors().lines().size();
  f.duration(key, ms, allow_zero);
  if (f.errors().lines().size() == before && f.has(key)) out = static_cast<double>(ms) / 1000;
}

// A rate: "200/s", "6000/m", or a bare number of requests per second.
void rate(const YamlFields& f, const char* key, double& out) {
  std::string text;
  if (!f.has(key) || !f.scalar(key, text)) return;
  double v = 0;
  if (number(text, v, false)) {
    if (v < 0) return f.error(key, "must not be negative");
    out = v;
    return;
  }
  f.rate(key, out);
}

// What goes into a request head verbatim: a header name must be an HTTP token, a header
// value (and a path) must not hold CR, LF or another control byte, so a scenario can never
// split a request or add a header of its own.
bool header_name_ok(const std::string& name) {
  if (name.empty()) return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          (c != '\0' && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr)))
      return false;
  return true;
}

bool header_value_ok(const std::string& value) {
  for (char c : value)
    if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

constexpr const char* kBadName =
    "must be a token (letters, digits, !#$%&'*+-.^_`|~; no space, CR or LF)";
constexpr const char* kBadValue = "must not contain CR, LF or other control characters";

void read_url(const YamlFields& f, const char* key, std::optional<Url>& out) {
  std::string text, error;
  if (!f.has(key) || !f.scalar(key, text) || text.empty()) return;  // empty: not given
  Url url;
  if (!parse_url(text, url, error)) return f.error(key, error);
  out = url;
}

void read_action(const YamlFields& parent, const char* key, Action& out) {
  if (!parent.has(key)) return;
  YamlFields f(parent.errors(), parent.node(key), parent.path(key), {"get", "run", "timeout"});
  if (!f.ok()) return;
  read_url(f, "get", out.get);
  f.string("run", out.run);
  seconds(f, "timeout", out.timeout_s, false);
  if (out.get && !out.run.empty()) f.error("run", "give either get or run, not both");
  if (out.empty()) parent.error(key, "needs get: URL or run: COMMAND");
}

void read_phases(const YamlFields& root, Scenario& s) {
  YAML::Node list = root.node("load");
  if (!list.IsSequence() || list.size() == 0)
    return root.error("load", "expected a list of phases ({duration, rate[, to, name]})");
  for (std::size_t i = 0; i < list.size(); ++i) {
    YamlFields f(root.errors(), list[i], root.path("load") + "[" + std::to_string(i) + "]",
                 {"name", "duration", "rate", "to"});
    if (!f.ok()) continue;
    Phase p;
    f.string("name", p.name);
    if (p.name.empty()) p.name = "phase " + std::to_string(i + 1);
    if (f.required("duration")) seconds(f, "duration", p.duration_s, false);
    if (f.required("rate")) rate(f, "rate", p.rate);
    p.rate_to = p.rate;
    rate(f, "to", p.rate_to);
    s.phases.push_back(p);
  }
}

void read_faults(const YamlFields& root, Scenario& s) {
  if (!root.has("faults")) return;
  YAML::Node list = root.node("faults");
  if (!list.IsSequence()) return root.error("faults", "expected a list");
  for (std::size_t i = 0; i < list.size(); ++i) {
    YamlFields f(root.errors(), list[i], root.path("faults") + "[" + std::to_string(i) + "]",
                 {"name", "at", "duration", "start", "end"});
    if (!f.ok()) continue;
    Fault fault;
    f.string("name", fault.name);
    if (fault.name.empty()) fault.name = "fault " + std::to_string(i + 1);
    if (f.required("at")) seconds(f, "at", fault.at_s, true);
    if (f.required("duration")) seconds(f, "duration", fault.duration_s, false);
    if (f.required("start")) read_action(f, "start", fault.start);
    read_action(f, "end", fault.end);
    s.faults.push_back(fault);
  }
}

void read_controls(const YamlFields& root, Scenario& s) {
  if (!root.has("controls")) return;
  YAML::Node list = root.node("controls");
  if (!list.IsSequence()) return root.error("controls", "expected a list of charts");
  for (std::size_t i = 0; i < list.size(); ++i) {
    std::string path = root.path("controls") + "[" + std::to_string(i) + "]";
    YamlFields f(root.errors(), list[i], path, {"title", "unit", "series"});
    if (!f.ok()) continue;
    ControlSpec chart;
    if (f.required("title")) f.string("title", chart.title);
    f.string("unit", chart.unit);
    YAML::Node series = f.node("series");
    if (!series.IsSequence() || series.size() == 0) {
      f.error("series", "expected a list of {name, metric[, labels, agg, rate]}");
      continue;
    }
    for (std::size_t j = 0; j < series.size(); ++j) {
      YamlFields g(root.errors(), series[j], f.path("series") + "[" + std::to_string(j) + "]",
                   {"name", "metric", "labels", "agg", "rate"});
      if (!g.ok()) continue;
      ControlSeries cs;
      if (g.required("metric")) g.string("metric", cs.metric);
      g.string("name", cs.name);
      if (cs.name.empty()) cs.name = cs.metric;
      g.boolean("rate", cs.rate);
      std::string agg = "sum";
      g.string("agg", agg);
      if (agg == "sum") cs.agg = ControlSeries::Agg::sum;
      else if (agg == "max") cs.agg = ControlSeries::Agg::max;
      else if (agg == "min") cs.agg = ControlSeries::Agg::min;
      else g.error("agg", "expected sum, max or min");
      if (g.has("labels")) {
        YAML::Node labels = g.node("labels");
        if (!labels.IsMap()) {
          g.error("labels", "expected a mapping of label: value");
        } else {
          for (const auto& kv : labels) {
            if (!kv.first.IsScalar() || !kv.second.IsScalar())
              g.error("labels", "label names and values must be scalars");
            else cs.labels[kv.first.Scalar()] = kv.second.Scalar();
          }
        }
      }
      chart.series.push_back(cs);
    }
    s.controls.push_back(chart);
  }
}

const char* const kMetrics[] = {"success_ratio", "ratio",   "p50_ms", "p90_ms",
                                "p99_ms",        "p999_ms", "max_ms", "ok_rate",
                                "achieved_rate", "recovery_s"};

void read_objectives(const YamlFields& root, Scenario& s) {
  if (!root.has("objectives")) return;
  YAML::Node list = root.node("objectives");
  if (!list.IsSequence()) return root.error("objectives", "expected a list");
  for (std::size_t i = 0; i < list.size(); ++i) {
    YamlFields f(root.errors(), list[i], root.path("objectives") + "[" + std::to_string(i) + "]",
                 {"metric", "outcome", "priority", "phase", "fault", "threshold", "hold", "min",
                  "max"});
    if (!f.ok()) continue;
    Objective o;
    if (f.required("metric")) f.string("metric", o.metric);
    bool known = false;
    for (const char* m : kMetrics) known = known || o.metric == m;
    if (!o.metric.empty() && !known) {
      std::string list_text;
      for (const char* m : kMetrics) list_text += std::string(list_text.empty() ? "" : ", ") + m;
      f.error("metric", "unknown metric '" + o.metric + "' (one of " + list_text + ")");
    }
    std::string outcome;
    f.string("outcome", outcome);
    if (!outcome.empty()) {
      o.outcome = outcome_by_name(outcome);
      if (!o.outcome) f.error("outcome", "unknown outcome '" + outcome + "'");
    }
    if (o.metric == "ratio" && !f.has("outcome")) f.error("metric", "ratio needs outcome:");
    f.string("priority", o.priority);
    f.string("phase", o.phase);
    f.string("fault", o.fault);
    if (o.metric == "recovery_s" && o.fault.empty()) f.error("metric", "recovery_s needs fault:");
    for (const char* key : {"threshold", "min", "max"}) {
      std::string text;
      if (!f.has(key) || !f.scalar(key, text)) continue;
      double v = 0;
      if (!number(text, v, true)) {
        f.error(key, "expected a number (or a percentage like 99%)");
        continue;
      }
      if (std::string(key) == "threshold") {
        if (v <= 0 || v > 1) f.error(key, "a success ratio: above 0 and at most 1 (or 100%)");
        else o.threshold = v;
      } else if (std::string(key) == "min") o.min = v;
      else o.max = v;
    }
    seconds(f, "hold", o.hold_s, false);
    if (!o.min && !o.max) f.error("metric", "give min: or max: (or both)");
    s.objectives.push_back(o);
  }
}

std::string fmt(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

// "success ratio of critical during spike >= 0.99".
std::string describe(const Objective& o) {
  std::string text = o.metric;
  if (o.metric == "ratio" && o.outcome) text = std::string(outcome_name(*o.outcome)) + " ratio";
  if (o.metric == "recovery_s") text = "recovery (s) after '" + o.fault + "'";
  if (!o.priority.empty()) text += " of " + o.priority;
  if (!o.phase.empty()) text += " during '" + o.phase + "'";
  if (o.min) text += " >= " + fmt(*o.min);
  if (o.min && o.max) text += " and";
  if (o.max) text += " <= " + fmt(*o.max);
  return text;
}

constexpr double kMaxRequests = 100e6;

// Cross-references between sections, checked once everything is read.
void check_references(const YamlFields& root, Scenario& s) {
  for (std::size_t i = 0; i < s.objectives.size(); ++i) {
    Objective& o = s.objectives[i];
    std::string where = "objectives[" + std::to_string(i) + "]";
    bool found = o.phase.empty();
    for (const Phase& p : s.phases) found = found || p.name == o.phase;
    if (!found) root.errors().add(root.node("objectives")[i].Mark(), where + ".phase",
                                  "no load phase is named '" + o.phase + "'");
    found = o.fault.empty();
    for (const Fault& fault : s.faults) found = found || fault.name == o.fault;
    if (!found) root.errors().add(root.node("objectives")[i].Mark(), where + ".fault",
                                  "no fault is named '" + o.fault + "'");
    found = o.priority.empty() || o.priority == "all";
    for (const auto& [name, weight] : s.priority_mix) found = found || name == o.priority;
    if (!found) root.errors().add(root.node("objectives")[i].Mark(), where + ".priority",
                                  "'" + o.priority + "' is not in priority.mix");
    if (o.priority == "all") o.priority.clear();
    o.text = describe(o);
  }
  double total = s.duration_s();
  double requests = 0;  // the schedule is built whole before the run: 32 bytes a request
  for (const Phase& p : s.phases) requests += (p.rate + p.rate_to) / 2 * p.duration_s;
  if (requests > kMaxRequests)
    root.errors().add(root.node("load").Mark(), "load",
                      "schedules " +
                          (requests < 1e15 ? group_thousands(std::to_string(std::llround(requests)))
                                           : fmt(requests)) +
                          " requests, more than 100,000,000 (32 bytes each): use a lower rate "
                          "or a shorter load");
  for (std::size_t i = 0; i < s.faults.size(); ++i)
    if (s.faults[i].at_s >= total && total > 0)
      root.errors().add(root.node("faults")[i].Mark(), "faults[" + std::to_string(i) + "].at",
                        "starts after the load ends (" + fmt(total) + " s)");
}

}  // namespace

bool parse_url(const std::string& text, Url& out, std::string& error) {
  const std::string scheme = "http://";
  if (text.compare(0, scheme.size(), scheme) != 0) {
    error = "expected http://HOST[:PORT][/PATH]" +
            std::string(text.compare(0, 8, "https://") == 0 ? " (https is not supported)" : "");
    return false;
  }
  std::string rest = text.substr(scheme.size());
  std::size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  out.path = slash == std::string::npos ? "/" : rest.substr(slash);
  std::size_t colon = authority.rfind(':');
  if (!authority.empty() && authority.front() == '[') {  // [v6]:port
    std::size_t close = authority.find(']');
    if (close == std::string::npos) {
      error = "unclosed [ in the host";
      return false;
    }
    out.host = authority.substr(1, close - 1);
    colon = authority.size() > close + 1 && authority[close + 1] == ':' ? close + 1
                                                                        : std::string::npos;
  } else {
    out.host = authority.substr(0, colon);
  }
  if (colon != std::string::npos) {
    std::string port = authority.substr(colon + 1);
    char* end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p < 1 || p > 65535) {
      error = "bad port '" + port + "'";
      return false;
    }
    out.port = static_cast<std::uint16_t>(p);
  }
  if (out.host.empty()) {
    error = "no host";
    return false;
  }
  for (char c : out.host)
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      error = "the host must not contain spaces or control characters";
      return false;
    }
  for (char c : out.path)
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      error = "the path must not contain spaces or control characters";
      return false;
    }
  out.text = text;
  return true;
}

std::string Action::describe() const { return get ? "GET " + get->text : "run: " + run; }

double Scenario::duration_s() const {
  double total = 0;
  for (const Phase& p : phases) total += p.duration_s;
  return total;
}

double Scenario::rate_at(double t) const {
  for (const Phase& p : phases) {
    if (t < p.duration_s) return p.rate + (p.rate_to - p.rate) * t / p.duration_s;
    t -= p.duration_s;
  }
  return 0;
}

std::string substitute(const std::string& file, const std::string& text,
                       const std::map<std::string, std::string>& vars,
                       std::vector<std::string>& errors) {
  std::string out;
  out.reserve(text.size());
  int line = 1, column = 1;
  for (std::size_t i = 0; i < text.size();) {
    if (text.compare(i, 2, "${") == 0) {
      std::size_t close = text.find('}', i + 2);
      std::size_t newline = text.find('\n', i);
      if (close != std::string::npos && close < newline) {
        std::string name = text.substr(i + 2, close - i - 2);
        std::optional<std::string> fallback;  // ${name:-default}
        if (std::size_t dash = name.find(":-"); dash != std::string::npos) {
          fallback = name.substr(dash + 2);
          name.resize(dash);
        }
        auto it = vars.find(name);
        const char* env = it == vars.end() && !name.empty() ? std::getenv(name.c_str()) : nullptr;
        if (it != vars.end()) out += it->second;
        else if (env) out += env;
        else if (fallback) out += *fallback;
        else errors.push_back(file + ":" + std::to_string(line) + ":" + std::to_string(column) +
                              ": undefined variable ${" + name + "} (give --set " + name +
                              "=VALUE or set it in the environment)");
        column += static_cast<int>(close + 1 - i);
        i = close + 1;
        continue;
      }
    }
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
    out += text[i++];
  }
  return out;
}

std::optional<Scenario> load_scenario(const std::string& file,
                                      const std::map<std::string, std::string>& vars,
                                      std::vector<std::string>& errors) {
  std::ifstream in(file);
  if (!in) {
    errors.push_back(file + ": cannot read the file");
    return std::nullopt;
  }
  std::stringstream raw;
  raw << in.rdbuf();
  std::string text = substitute(file, raw.str(), vars, errors);
  if (!errors.empty()) return std::nullopt;
  YAML::Node doc;
  try {
    doc = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    errors.push_back(file + ":" + std::to_string(e.mark.line + 1) + ":" +
                     std::to_string(e.mark.column + 1) + ": " + e.msg);
    return std::nullopt;
  }
  ConfigErrors errs(file);
  YamlFields root(errs, doc, "",
                  {"name", "description", "target", "metrics", "timeout", "connections",
                   "headers", "priority", "keys", "paths", "load", "faults", "controls",
                   "objectives", "seed"});
  Scenario s;
  s.file = file;
  if (root.ok()) {
    if (root.required("name")) root.string("name", s.name);
    root.string("description", s.description);
    std::optional<Url> target;
    if (root.required("target")) read_url(root, "target", target);
    if (target) s.target = *target;
    read_url(root, "metrics", s.metrics);
    seconds(root, "timeout", s.timeout_s, false);
    root.count("connections", s.connections, 1, 100000);
    root.count("seed", s.seed, 0, UINT64_MAX);
    if (root.has("headers")) {
      YAML::Node h = root.node("headers");
      if (!h.IsMap()) root.error("headers", "expected a mapping of name: value");
      else
        for (const auto& kv : h) {
          std::string where = root.path("headers");
          if (!kv.first.IsScalar() || !header_name_ok(kv.first.Scalar())) {
            errs.add(kv.first.Mark(), where, std::string("a header name ") + kBadName);
            continue;
          }
          where += "." + kv.first.Scalar();
          if (!kv.second.IsScalar() && !kv.second.IsNull())
            errs.add(kv.second.Mark(), where, "expected a single value");
          else if (!header_value_ok(kv.second.Scalar()))
            errs.add(kv.second.Mark(), where, kBadValue);
          else
            s.headers.emplace_back(kv.first.Scalar(), kv.second.Scalar());
        }
    }
    if (root.has("priority")) {
      YamlFields p(errs, root.node("priority"), root.path("priority"), {"header", "mix"});
      if (p.ok()) {
        p.string("header", s.priority_header);
        if (!header_name_ok(s.priority_header)) p.error("header", kBadName);
        YAML::Node mix = p.node("mix");
        if (!mix.IsMap() || mix.size() == 0 || mix.size() > 255) {
          p.error("mix", "expected a mapping of priority: weight (at most 255)");
        } else {
          for (const auto& kv : mix) {
            double w = 0;
            if (!kv.first.IsScalar() || kv.first.Scalar().empty() ||
                !header_value_ok(kv.first.Scalar()))
              errs.add(kv.first.Mark(), p.path("mix"),
                       "a priority name (sent as a header value) must not be empty nor contain "
                       "CR, LF or other control characters");
            else if (!kv.second.IsScalar() || !number(kv.second.Scalar(), w, true) || w < 0)
              p.error("mix", "weight of '" + kv.first.Scalar() + "' must be a number >= 0");
            else s.priority_mix.emplace_back(kv.first.Scalar(), w);
          }
        }
      }
    }
    if (root.has("keys")) {
      YamlFields k(errs, root.node("keys"), root.path("keys"), {"header", "count"});
      if (k.ok()) {
        if (k.required("header")) k.string("header", s.key_header);
        if (!s.key_header.empty() && !header_name_ok(s.key_header)) k.error("header", kBadName);
        if (k.required("count")) k.count("count", s.key_count, 1, 10000000);
      }
    }
    if (root.has("paths")) {
      YAML::Node list = root.node("paths");
      if (!list.IsSequence() || list.size() > 255)
        root.error("paths", "expected a list of {path, weight} (at most 255)");
      else
        for (std::size_t i = 0; i < list.size(); ++i) {
          YamlFields f(errs, list[i], root.path("paths") + "[" + std::to_string(i) + "]",
                       {"path", "weight"});
          if (!f.ok()) continue;
          WeightedPath wp;
          if (f.required("path")) f.string("path", wp.path);
          std::string w;
          if (f.has("weight") && f.scalar("weight", w) && (!number(w, wp.weight, false) || wp.weight < 0))
            f.error("weight", "expected a number >= 0");
          if (!wp.path.empty() && wp.path.front() != '/') f.error("path", "must start with /");
          for (char c : wp.path)
            if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
              f.error("path", "must not contain spaces or control characters (write a space as %20)");
              break;
            }
          s.paths.push_back(wp);
        }
    }
    read_phases(root, s);
    read_faults(root, s);
    read_controls(root, s);
    read_objectives(root, s);
    check_references(root, s);
  } else {
    errs.add(doc.Mark(), "", "expected a mapping (a scenario)");
  }
  for (const std::string& line : errs.lines()) errors.push_back(line);
  if (!errors.empty()) return std::nullopt;
  if (s.controls.empty() && s.metrics) s.controls = default_controls();
  return s;
}

std::vector<ControlSpec> default_controls() {
  auto series = [](std::string name, std::string metric,
                   std::map<std::string, std::string> labels = {}, bool is_rate = false) {
    ControlSeries s;
    s.name = std::move(name);
    s.metric = std::move(metric);
    s.labels = std::move(labels);
    s.rate = is_rate;
    return s;
  };
  return {
      {"Concurrency limit and in-flight", "requests",
       {series("limit", "bulwark_concurrency_limit"),
        series("in-flight", "bulwark_inflight_requests"),
        series("waiting", "bulwark_pending_requests")}},
      {"Circuit breakers and health", "endpoints",
       {series("open", "bulwark_circuit_state", {{"state", "open"}}),
        series("half-open", "bulwark_circuit_state", {{"state", "half_open"}}),
        series("healthy", "bulwark_endpoint_healthy")}},
      {"Resilience actions", "per second",
       {series("retries", "bulwark_retries_total", {}, true),
        series("shed", "bulwark_shed_total", {}, true),
        series("rate-limited", "bulwark_ratelimit_decisions_total", {{"decision", "limited"}}, true)}},
  };
}

}  // namespace bulwark::drill
