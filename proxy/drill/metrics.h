// Prometheus text exposition, read just enough to draw control charts: each sample line
// `name{label="value",...} number` becomes a Sample; comments, blank lines and lines that do
// not parse are skipped (a partial scrape still gives what it has).
#pragma once

#include <functional>
#include <map>
#include <set>
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

// With `wanted`, only the samples of those metric names: other lines are skipped before their
// labels are read, so a large exposition costs little more than a scan (the scrape runs on the
// load generator's thread).
std::vector<Sample> parse_prometheus(std::string_view text,
                                     const std::set<std::string, std::less<>>* wanted = nullptr);

// The value of one control series in one scrape: the sum (max, min) of the samples named
// `series.metric` whose labels include every `series.labels` pair; NaN when none matched.
double evaluate(const ControlSeries& series, const std::vector<Sample>& samples);

}  // namespace bulwark::drill
