// Runs one scenario: builds the request schedule, drives the load generator, scrapes the
// metrics URL every second, starts and ends the faults on time, and turns what happened into
// a Report with every objective judged.
#pragma once

#include <string>
#include <vector>

#include "drill/load.h"
#include "drill/model.h"
#include "drill/scenario.h"

namespace bulwark::drill {

// The scheduled start of every request (ns from the run start), in order, with the priority
// and path of each drawn from the scenario's weights (PRNG seeded by `seed`).
std::vector<Record> build_schedule(const Scenario& s);

// The request heads, one per path x priority (see LoadGenerator), without the final CRLF.
std::vector<std::string> build_requests(const Scenario& s);

// Runs the scenario. Returns false (with `error`) when it could not run at all (an address
// that does not resolve); a run whose objectives failed returns true with report.passed false.
// `progress` (may be null) gets one line per second while the load runs.
bool run_scenario(const Scenario& s, Report& report, std::string& error, std::FILE* progress);

// Fills the per-second series, summaries and objective results of `report` from the records.
void summarize(const Scenario& s, const std::vector<Record>& records,
               const std::vector<std::string>& reasons, Report& report);

}  // namespace bulwark::drill
