// bulwark-load's results: the per-request CSV and the JSON summary line (see loadgen.cc's
// header for their format).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace loadgen {

// What became of one scheduled request.
struct Outcome {
  std::int64_t latency_us = 0;  // from the scheduled start
  std::uint16_t status = 0;     // 0: no response
  std::uint16_t reason = 0;     // index into Report::reasons; 0 = none
  std::uint8_t priority = 0;    // index into Report::priorities
};

struct Report {
  std::uint64_t offered = 0;                                  // requests scheduled
  std::function<const Outcome&(std::uint64_t)> outcome;       // of request i
  std::function<double(std::uint64_t)> sched_ms;              // request i's scheduled start
  const std::vector<std::string>* reasons = nullptr;          // names of the reason ids
  const std::vector<std::string>* priorities = nullptr;       // names of the priority ids
  bool with_priority = false;                                 // --mix given
  std::uint16_t overflow_reason = 0;                          // the id of "client-overflow"
  std::string csv_path;                                       // --out ("": none)
  std::uint64_t window_ns = 0;                                // the scheduled duration
  std::uint64_t in_window = 0;                                // completed within it
  std::int64_t max_lag_ns = 0;                                // the latest start
};

// Writes the CSV (when csv_path is set) and prints the summary on stdout; warns on stderr
// when the generator itself started requests late.
void write_results(const Report& r);

}  // namespace loadgen
