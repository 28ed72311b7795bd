// bulwark-drill: runs a resilience drill scenario (docs/drills.md) and writes its report.
//
// Usage: bulwark-drill SCENARIO.yaml [--set NAME=VALUE]... [--report FILE.html]
//                      [--json FILE.json] [--check] [--quiet]
//   --set NAME=VALUE  a value for ${NAME} in the scenario (else the environment variable)
//   --report FILE     the HTML report (default: SCENARIO-NAME.html in the current directory)
//   --json FILE       the JSON summary (default: next to the report, .json)
//   --check           only read the scenario and print every error in it
//   --quiet           no progress lines
// Exit status: 0 every objective held, 1 an objective failed, 2 the scenario or the command
// line is wrong, 3 the run could not start (an address that does not resolve, an unwritable
// report).
#include <sys/resource.h>

#include <cctype>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>

#include <unistd.h>

#include "drill/model.h"
#include "drill/runner.h"
#include "drill/scenario.h"

namespace {

int usage(const char* message) {
  std::fprintf(stderr,
               "bulwark-drill: %s\nusage: bulwark-drill SCENARIO.yaml [--set NAME=VALUE]... "
               "[--report FILE.html] [--json FILE.json] [--check] [--quiet]\n",
               message);
  return 2;
}

bool write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  return static_cast<bool>(out);
}

// Whether `path` can be written, checked before the run: an unwritable report was otherwise
// found out only once the whole drill had run. A file created for the check is removed.
bool writable(const std::string& path) {
  bool existed = access(path.c_str(), F_OK) == 0;
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (!f) return false;
  std::fclose(f);
  if (!existed) std::remove(path.c_str());
  return true;
}

std::string format_measured(double v) {
  if (v != v) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  std::string file, report_path, json_path;
  std::map<std::string, std::string> vars;
  bool check = false, quiet = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) return nullptr;
      (void)name;
      return argv[++i];
    };
    if (a == "--set") {
      const char* v = value("--set");
      if (!v || !std::strchr(v, '=')) return usage("--set needs NAME=VALUE");
      std::string kv = v;
      vars[kv.substr(0, kv.find('='))] = kv.substr(kv.find('=') + 1);
    } else if (a == "--report") {
      const char* v = value("--report");
      if (!v) return usage("--report needs a file");
      report_path = v;
    } else if (a == "--json") {
      const char* v = value("--json");
      if (!v) return usage("--json needs a file");
      json_path = v;
    } else if (a == "--check") {
      check = true;
    } else if (a == "--quiet") {
      quiet = true;
    } else if (a == "-h" || a == "--help") {
      usage("runs a resilience drill scenario");
      return 0;
    } else if (!a.empty() && a[0] == '-') {
      return usage(("unknown option " + a).c_str());
    } else if (file.empty()) {
      file = a;
    } else {
      return usage("give one scenario file");
    }
  }
  if (file.empty()) return usage("no scenario file");
  std::vector<std::string> errors;
  auto scenario = bulwark::drill::load_scenario(file, vars, errors);
  if (!scenario) {
    for (const std::string& e : errors) std::fprintf(stderr, "%s\n", e.c_str());
    std::fprintf(stderr, "bulwark-drill: %zu error%s in %s\n", errors.size(), errors.size() == 1 ? "" : "s",
                 file.c_str());
    return 2;
  }
  if (check) {
    std::printf("%s: scenario '%s' is valid: %.1f s of load, %zu fault%s, %zu objective%s\n", file.c_str(),
                scenario->name.c_str(), scenario->duration_s(), scenario->faults.size(),
                scenario->faults.size() == 1 ? "" : "s", scenario->objectives.size(),
                scenario->objectives.size() == 1 ? "" : "s");
    return 0;
  }
  if (report_path.empty()) {
    std::string name;
    for (char c : scenario->name) name += std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '_';
    report_path = (name.empty() ? "drill" : name) + ".html";
  }
  if (json_path.empty()) {
    json_path = report_path;
    std::size_t dot = json_path.rfind('.');
    if (dot != std::string::npos && json_path.find('/', dot) == std::string::npos) json_path.resize(dot);
    json_path += ".json";
  }
  if (!writable(report_path) || !writable(json_path)) {
    std::fprintf(stderr, "bulwark-drill: cannot write %s or %s\n", report_path.c_str(), json_path.c_str());
    return 3;
  }
  std::signal(SIGPIPE, SIG_IGN);
  rlimit lim{};  // `connections` may need more descriptors than the usual soft limit of 1024
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  bulwark::drill::Report report;
  std::string error;
  if (!quiet)
    std::fprintf(stderr, "drill '%s': %.1f s against %s\n", scenario->name.c_str(), scenario->duration_s(),
                 scenario->target.text.c_str());
  if (!bulwark::drill::run_scenario(*scenario, report, error, quiet ? nullptr : stderr)) {
    std::fprintf(stderr, "bulwark-drill: %s\n", error.c_str());
    return 3;
  }
  if (!write_file(report_path, bulwark::drill::render_html(report)) ||
      !write_file(json_path, bulwark::drill::render_json(report))) {
    std::fprintf(stderr, "bulwark-drill: cannot write %s or %s\n", report_path.c_str(), json_path.c_str());
    return 3;
  }
  const auto& all = report.priorities.empty() ? bulwark::drill::PrioritySummary{} : report.priorities[0];
  std::printf("%s: %s — %.0f requests/s offered, %.0f answered/s, success %.2f%%, p99 %.1f ms\n",
              report.scenario.c_str(), report.passed ? "PASSED" : "FAILED", report.offered_rate_avg,
              report.achieved_rate, all.success_ratio * 100, all.latency.p99);
  for (const auto& o : report.objectives)
    std::printf("  [%s] %s: %s (%s)\n", o.passed ? "pass" : "FAIL", o.text.c_str(),
                format_measured(o.measured).c_str(), o.detail.c_str());
  std::printf("report: %s\njson: %s\n", report_path.c_str(), json_path.c_str());
  return report.passed ? 0 : 1;
}
