#include "results.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

namespace loadgen {

namespace {

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", ch);
      out += b;
    } else {
      out += static_cast<char>(ch);
    }
  }
  return out + "\"";
}

std::string percentile(std::vector<std::int64_t>& v, double p) {
  if (v.empty()) return "null";
  auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size())));
  if (rank == 0) rank = 1;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(rank - 1), v.end());
  return std::to_string(v[rank - 1]);
}

}  // namespace

void write_results(const Report& rep) {
  const std::uint64_t offered = rep.offered;
  const std::vector<std::string>& reasons_by_id = *rep.reasons;
  const std::vector<std::string>& priorities = *rep.priorities;
  if (!rep.csv_path.empty()) {
    FILE* f = std::fopen(rep.csv_path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "bulwark-load: cannot write %s: %s\n", rep.csv_path.c_str(),
                   std::strerror(errno));
    } else {
      std::fputs("sched_ms,latency_us,status,reason,priority\n", f);
      for (std::uint64_t i = 0; i < offered; ++i) {
        const Outcome& r = rep.outcome(i);
        std::fprintf(f, "%.3f,%lld,%u,%s,%s\n", rep.sched_ms(i),
                     static_cast<long long>(r.latency_us), r.status,
                     csv_field(reasons_by_id[r.reason]).c_str(),
                     rep.with_priority ? csv_field(priorities[r.priority]).c_str() : "");
      }
      std::fclose(f);
    }
  }
  std::uint64_t completed = 0, overflow = 0;
  std::map<int, std::uint64_t> statuses;
  std::map<std::string, std::uint64_t> reasons;
  std::vector<std::vector<std::int64_t>> ok(priorities.size());
  std::vector<std::uint64_t> sent(priorities.size());
  std::vector<std::int64_t> all_ok;
  for (std::uint64_t i = 0; i < offered; ++i) {
    const Outcome& r = rep.outcome(i);
    ++statuses[r.status];
    if (r.reason) ++reasons[reasons_by_id[r.reason]];
    if (r.status != 0) ++completed;
    if (r.reason == rep.overflow_reason && r.status == 0) {
      ++overflow;
      continue;
    }
    ++sent[r.priority];
    if (r.status >= 200 && r.status < 300) {
      ok[r.priority].push_back(r.latency_us);
      all_ok.push_back(r.latency_us);
    }
  }
  double window_s = static_cast<double>(rep.window_ns) / 1e9;
  std::string j = "{\"offered\":" + std::to_string(offered) +
                  ",\"sent\":" + std::to_string(offered - overflow) +
                  ",\"completed\":" + std::to_string(completed) + ",\"status\":{";
  bool first = true;
  for (auto& [s, n] : statuses) {
    j += (first ? "\"" : ",\"") + std::to_string(s) + "\":" + std::to_string(n);
    first = false;
  }
  j += "},\"reasons\":{";
  first = true;
  for (auto& [s, n] : reasons) {
    if (!first) j += ',';
    j += json_string(s);
    j += ':';
    j += std::to_string(n);
    first = false;
  }
  j += "},\"p50_us\":" + percentile(all_ok, 0.5) + ",\"p99_us\":" + percentile(all_ok, 0.99) +
       ",\"priority\":{";
  for (std::size_t p = 0; p < priorities.size(); ++p) {
    if (p) j += ',';
    j += json_string(priorities[p]);
    j += ":{\"sent\":" + std::to_string(sent[p]) +
         ",\"ok\":" + std::to_string(ok[p].size()) + ",\"p50_us\":" + percentile(ok[p], 0.5) +
         ",\"p99_us\":" + percentile(ok[p], 0.99) + "}";
  }
  char tail[160];
  std::snprintf(tail, sizeof tail,
                "},\"achieved_rate\":%.1f,\"duration_s\":%.3f,\"max_start_lag_us\":%lld}",
                window_s > 0 ? static_cast<double>(rep.in_window) / window_s : 0.0, window_s,
                static_cast<long long>(rep.max_lag_ns / 1000));
  j += tail;
  std::printf("%s\n", j.c_str());
  std::fflush(stdout);
  if (rep.max_lag_ns > 10'000'000)
    std::fprintf(stderr,
                 "bulwark-load: warning: the generator started a request %.1f ms late "
                 "(the latencies include it): a descheduled process, or more than one thread "
                 "can offer\n",
                 static_cast<double>(rep.max_lag_ns) / 1e6);
}

}  // namespace loadgen
