// Objectives judged over the records of a run (see Objective in scenario.h for the metrics).
#pragma once

#include <vector>

#include "drill/load.h"
#include "drill/scenario.h"

namespace bulwark::drill {

// Nearest-rank percentile (q in [0, 1]) of `sorted`, in the same unit; NaN when empty.
double percentile(const std::vector<std::uint32_t>& sorted, double q);

// `priorities` are the mix's names in record order (Record::priority indexes it).
ObjectiveResult judge(const Objective& o, const Scenario& s, const std::vector<Record>& records,
                      const std::vector<std::string>& priorities);

}  // namespace bulwark::drill
