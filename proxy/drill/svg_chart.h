// A small SVG writer for the drill report's time-series charts: seconds on x, one y axis
// (linear, or logarithmic when asked or when the data spans a wide range), stacked step
// areas (one value per second, drawn as bars without gaps), lines with gaps where a value
// is NaN, fault spans as translucent bands and phases as dashed dividers, with a title, a
// legend and gridlines. The output is an inline <svg> with a viewBox, to be scaled by CSS;
// every coordinate written is finite, whatever the input holds.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bulwark::drill {

// Escapes & < > " ' for HTML/SVG text and attribute values.
void append_escaped(std::string& out, std::string_view text);
std::string escaped(std::string_view text);

// A y (or x) axis: its domain and the tick values to label, lo and hi included.
struct Axis {
  double lo = 0, hi = 1;
  std::vector<double> ticks;
  bool log = false;
  double step = 1;  // linear axes: the distance between two ticks
};

// A linear axis over [min, max] (0 included when min >= 0) with at most `max_ticks` ticks on
// multiples of 1, 2, 2.5 or 5 times a power of ten (no fraction when `integer`). Non-finite
// or empty ranges give [0, 1].
Axis linear_axis(double min, double max, int max_ticks = 6, bool integer = false);
// A logarithmic axis over [min, max] (min > 0) with ticks on 1-2-5 steps, or on powers of ten
// when that would be more than `max_ticks`.
Axis log_axis(double min, double max, int max_ticks = 6);
// A tick value as text: "0", "2.5", "1,500", "20k", "0.05".
std::string tick_label(double v, const Axis& axis);

struct ChartSeries {
  std::string name;                // legend text
  std::span<const double> values;  // one per second; NaN = no value
  std::string color;               // CSS colour
  bool dashed = false;
  bool step = false;  // lines: hold each value over its whole second
};

struct ChartSpan {
  std::string name;
  double from_s = 0, to_s = 0;
};

enum class YScale { linear, log, auto_log };

struct Chart {
  std::string id;  // unique in the document (used for clip paths and title ids)
  std::string title;
  std::string unit;    // y axis label
  double seconds = 0;  // x runs from 0 to this (at least the longest series)
  YScale y_scale = YScale::linear;
  double auto_log_ratio = 30;        // auto_log: log when max/min of the positive values exceeds it
  bool integer_y = false;            // counts: no fractional tick steps
  std::vector<ChartSeries> stacked;  // step areas, bottom first; NaN counts as 0
  std::vector<ChartSeries> lines;    // drawn over the areas, each value at mid-second
  std::vector<ChartSpan> faults;     // shaded bands
  std::vector<ChartSpan> phases;     // dashed dividers at from_s
  std::string empty_text = "no data";  // shown when no series has a finite value
};

// The chart as one <svg> element.
std::string render_chart(const Chart& chart);

}  // namespace bulwark::drill
