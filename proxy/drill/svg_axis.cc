// Axes and text for the drill report's charts: tick computation, tick labels, escaping.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "drill/model.h"
#include "drill/svg_chart.h"

namespace bulwark::drill {

void append_escaped(std::string& out, std::string_view s) {
  for (char c : s) {
    switch (c) {
      case '&':
        out.append("&amp;");
        break;
      case '<':
        out.append("&lt;");
        break;
      case '>':
        out.append("&gt;");
        break;
      case '"':
        out.append("&quot;");
        break;
      case '\'':
        out.append("&#39;");
        break;
      default:
        // Control bytes other than tab and newline are not allowed in HTML text.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') {
          out.push_back(' ');
        } else {
          out.push_back(c);
        }
    }
  }
}

std::string escaped(std::string_view s) {
  std::string out;
  append_escaped(out, s);
  return out;
}

Axis linear_axis(double min, double max, int max_ticks, bool integer) {
  Axis a;
  if (!std::isfinite(min) || !std::isfinite(max) || min > max) min = max = 0;
  min = std::min(min, 0.0);
  max = std::max(max, 0.0);
  max_ticks = std::max(max_ticks, 3);
  if (integer) max = std::max(max, min + 3);  // counts: 0..3 at least (4 ticks)
  if (max - min <= 0) max = min + 1;
  double range = max - min;
  int e = static_cast<int>(std::floor(std::log10(range / max_ticks))) - 1;
  for (;; ++e) {
    bool found = false;
    for (double m : {1.0, 2.0, 2.5, 5.0}) {
      double step = m * std::pow(10.0, e);
      if (integer && (step < 1 || (m == 2.5 && e < 1))) continue;
      double lo = std::floor(min / step + 1e-9) * step;
      double hi = std::ceil(max / step - 1e-9) * step;
      if (std::llround((hi - lo) / step) + 1 <= max_ticks) {
        a.lo = lo;
        a.hi = hi;
        a.step = step;
        found = true;
        break;
      }
    }
    if (found) break;
  }
  long long count = std::llround((a.hi - a.lo) / a.step);
  for (long long k = 0; k <= count; ++k) {
    a.ticks.push_back(std::round((a.lo + static_cast<double>(k) * a.step) / a.step) * a.step);
  }
  return a;
}

Axis log_axis(double min, double max, int max_ticks) {
  Axis a;
  a.log = true;
  if (!std::isfinite(max) || max <= 0) max = 1;
  if (!std::isfinite(min) || min <= 0 || min > max) min = max / 10;
  if (max <= min) max = min * 10;
  max_ticks = std::max(max_ticks, 3);
  int e0 = static_cast<int>(std::floor(std::log10(min))) - 1;
  int e1 = static_cast<int>(std::ceil(std::log10(max))) + 1;
  const std::vector<std::vector<double>> sequences = {{1, 2, 5}, {1, 3}, {1}};
  for (const auto& mults : sequences) {
    std::vector<double> all;
    for (int e = e0; e <= e1; ++e)
      for (double m : mults) all.push_back(m * std::pow(10.0, e));
    double lo = all.front(), hi = all.back();
    for (double c : all)
      if (c <= min * (1 + 1e-9)) lo = c;
    for (auto it = all.rbegin(); it != all.rend(); ++it)
      if (*it >= max * (1 - 1e-9)) hi = *it;
    std::vector<double> ticks;
    for (double c : all)
      if (c >= lo * (1 - 1e-9) && c <= hi * (1 + 1e-9)) ticks.push_back(c);
    if (static_cast<int>(ticks.size()) <= max_ticks || mults.size() == 1) {
      if (static_cast<int>(ticks.size()) > max_ticks) {  // decades, every k-th
        std::size_t k = (ticks.size() - 1 + max_ticks - 2) / (max_ticks - 1);
        std::vector<double> thin;
        for (std::size_t i = 0; i < ticks.size(); i += k) thin.push_back(ticks[i]);
        if (thin.back() < hi * (1 - 1e-9)) thin.push_back(thin.back() * std::pow(10.0, k));
        ticks = thin;
        hi = ticks.back();
      }
      // Decades can leave most of a decade empty above the data: end the axis a little
      // above the data instead, when four ticks remain.
      if (mults.size() == 1 && ticks.size() > 4 && max * 1.25 < hi) {
        ticks.pop_back();
        hi = std::max(max * 1.25, ticks.back());
      }
      a.lo = lo;
      a.hi = hi;
      a.ticks = ticks;
      break;
    }
  }
  return a;
}

std::string tick_label(double v, const Axis& axis) {
  if (!std::isfinite(v)) return "";
  if (std::fabs(v) < 1e-12 * std::max(1.0, std::fabs(axis.hi - axis.lo))) return "0";
  double scale = 1;
  const char* suffix = "";
  double biggest = axis.log ? std::fabs(v) : std::max(std::fabs(axis.lo), std::fabs(axis.hi));
  if (biggest >= 1e7) {
    scale = 1e6;
    suffix = "M";
  } else if (biggest >= 1e4) {
    scale = 1e3;
    suffix = "k";
  }
  double s = v / scale;
  double precision = axis.log ? std::fabs(v) / scale * 1e-3 : axis.step / scale * 1e-3;
  int decimals = 0;
  while (decimals < 6 &&
         std::fabs(std::round(s * std::pow(10.0, decimals)) / std::pow(10.0, decimals) - s) >
             precision) {
    ++decimals;
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, s);
  std::string out = buf;
  if (out == "-0") out = "0";
  // Thousands separators in the integer part (1,500).
  std::size_t start = out[0] == '-' ? 1 : 0;
  std::size_t dot = out.find('.');
  std::size_t end = dot == std::string::npos ? out.size() : dot;
  out = out.substr(0, start) + group_thousands(out.substr(start, end - start)) + out.substr(end);
  out.append(suffix);
  return out;
}

}  // namespace bulwark::drill
