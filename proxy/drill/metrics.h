// Prometheus text exposition, read just enough to draw control charts: each sample line
// `name{label="value",...} number` becomes a Sample; comments, blank lines and lines that do
// not parse are skipped (a partial scrape still gives what it has).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "drill/scenario.h"

namespace bulwark::drill {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

std::vector<Sample> parse_prometheus(std::string_view text);

// The value of one control series in one scrape: the sum (max, min) of the samples named
// `series.metric` whose labels include every `series.labels` pair; NaN when none matched.
double evaluate(const ControlSeries& series, const std::vector<Sample>& samples);

}  // namespace bulwark::drill
