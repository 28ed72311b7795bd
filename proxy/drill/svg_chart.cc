// The drill report's time-series charts as inline SVG (see svg_chart.h); axes, tick labels and
// escaping are in svg_axis.cc.
#include "drill/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace bulwark::drill {
namespace {

// Geometry, in viewBox units (the SVG is scaled to the page's width by CSS).
constexpr double kWidth = 960;
constexpr double kLeft = 72;  // room for the y tick labels and the unit
constexpr double kRight = 24;
constexpr double kPlotHeight = 230;
constexpr double kFont = 13;
constexpr double kSmallFont = 12;
constexpr double kRow = 18;       // a legend row
constexpr double kStripRow = 17;  // a phase or fault label row above the plot
constexpr int kMaxFaultRows = 3;

constexpr char kInk[] = "#1d2330";
constexpr char kMuted[] = "#5b6375";
constexpr char kGrid[] = "#e3e6ec";
constexpr char kAxis[] = "#8a92a3";
constexpr char kFault[] = "#D55E00";  // vermillion (Okabe-Ito)
constexpr char kFaultText[] = "#9c3f00";

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A coordinate or length: one decimal at most, never NaN or inf (those become 0).
void num(std::string& out, double v) {
  if (!std::isfinite(v) || std::fabs(v) < 0.05) v = 0;
  v = std::clamp(v, -1e7, 1e7);
  char buf[32];
  int n = std::snprintf(buf, sizeof buf, "%.1f", v);
  if (n >= 2 && buf[n - 2] == '.' && buf[n - 1] == '0') n -= 2;
  out.append(buf, static_cast<std::size_t>(n));
}

void attr(std::string& out, const char* name, double v) {
  out.push_back(' ');
  out.append(name);
  out.append("=\"");
  num(out, v);
  out.push_back('"');
}

// "<rect x= y= width= height=" and "<line x1= y1= x2= y2=", left open for more attributes.
void rect(std::string& out, double x, double y, double w, double h) {
  out.append("<rect");
  attr(out, "x", x);
  attr(out, "y", y);
  attr(out, "width", w);
  attr(out, "height", h);
}

void line(std::string& out, double x1, double y1, double x2, double y2) {
  out.append("<line");
  attr(out, "x1", x1);
  attr(out, "y1", y1);
  attr(out, "x2", x2);
  attr(out, "y2", y2);
}

std::size_t code_points(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Estimated width of `s` in a sans-serif font of `font` px (no layout engine here).
double text_width(std::string_view s, double font) {
  return static_cast<double>(code_points(s)) * font * 0.56;
}

// `s`, cut at a code point boundary and ended with an ellipsis to fit `width`; empty when
// not even two characters fit.
std::string fit(std::string_view s, double width, double font) {
  if (text_width(s, font) <= width) return std::string(s);
  auto keep = static_cast<std::size_t>(std::max(0.0, width / (font * 0.56) - 1));
  if (keep < 2) return {};
  std::size_t i = 0, kept = 0;
  while (i < s.size()) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (kept == keep) break;
      ++kept;
    }
    ++i;
  }
  std::string out(s.substr(0, i));
  out.append("\xE2\x80\xA6");  // …
  return out;
}

void text(std::string& out, double x, double y, std::string_view content, std::string_view extra) {
  out.append("<text");
  attr(out, "x", x);
  attr(out, "y", y);
  if (!extra.empty()) {
    out.push_back(' ');
    out.append(extra);
  }
  out.push_back('>');
  append_escaped(out, content);
  out.append("</text>");
}

struct YMap {
  Axis axis;
  double top = 0, bottom = 0;
  double operator()(double v) const {
    double f;
    if (axis.log) {
      double lo = std::log10(axis.lo), hi = std::log10(axis.hi);
      f = v > 0 ? (std::log10(v) - lo) / (hi - lo) : 0;
    } else {
      f = (v - axis.lo) / (axis.hi - axis.lo);
    }
    if (!std::isfinite(f)) f = 0;
    return bottom - std::clamp(f, -0.02, 1.02) * (bottom - top);
  }
};

struct XMap {
  double seconds = 1, left = kLeft, right = kWidth - kRight;
  double operator()(double s) const {
    double f = s / seconds;
    if (!std::isfinite(f)) f = 0;
    return left + std::clamp(f, -0.01, 1.01) * (right - left);
  }
};

double value_at(std::span<const double> v, std::size_t i) { return i < v.size() ? v[i] : kNaN; }

// Whether the span can be drawn at all, and its ends clamped into [0, seconds].
bool clamp_span(const ChartSpan& s, double seconds, double& from, double& to) {
  if (!std::isfinite(s.from_s) || !std::isfinite(s.to_s)) return false;
  from = std::max(0.0, std::min(s.from_s, s.to_s));
  to = std::min(seconds, std::max(s.from_s, s.to_s));
  return from <= seconds && to >= 0 && from <= to;
}

void line_path(std::string& out, const ChartSeries& s, const XMap& x, const YMap& y,
               std::size_t n) {
  std::string dots;
  std::string d;
  std::size_t run = 0;  // points in the current segment
  for (std::size_t i = 0; i <= n; ++i) {
    double v = i < n ? value_at(s.values, i) : kNaN;
    if (!std::isfinite(v)) {
      if (run == 1 && !s.step) {  // a lone value: a dot, or it would not show
        double pv = value_at(s.values, i - 1);
        dots.append("<circle");
        attr(dots, "cx", x(static_cast<double>(i - 1) + 0.5));
        attr(dots, "cy", y(pv));
        dots.append(" r=\"2.5\"/>");
      }
      run = 0;
      continue;
    }
    double yv = y(v);
    if (s.step) {
      d.append(run == 0 ? "M" : "L");
      num(d, x(static_cast<double>(i)));
      d.push_back(' ');
      num(d, yv);
      d.append("L");
      num(d, x(static_cast<double>(i + 1)));
      d.push_back(' ');
      num(d, yv);
    } else {
      d.append(run == 0 ? "M" : "L");
      num(d, x(static_cast<double>(i) + 0.5));
      d.push_back(' ');
      num(d, yv);
    }
    ++run;
  }
  out.append("<g class=\"series\" data-name=\"");
  append_escaped(out, s.name);
  out.append("\" stroke=\"");
  append_escaped(out, s.color);
  out.append("\" fill=\"");
  append_escaped(out, s.color);
  out.append("\">");
  if (!d.empty()) {
    out.append("<path fill=\"none\" stroke-width=\"");
    out.append(s.step ? "1.6" : "2");
    out.append("\" stroke-linejoin=\"round\" stroke-linecap=\"round\"");
    if (s.dashed) out.append(" stroke-dasharray=\"6 4\"");
    out.append(" d=\"");
    out.append(d);
    out.append("\"/>");
  }
  out.append(dots);
  out.append("</g>");
}

}  // namespace

std::string render_chart(const Chart& c) {
  // ---- data extent ---------------------------------------------------------------------
  std::size_t n = 0;
  for (const auto& s : c.stacked) n = std::max(n, s.values.size());
  for (const auto& s : c.lines) n = std::max(n, s.values.size());
  double seconds = std::isfinite(c.seconds) ? std::max(c.seconds, static_cast<double>(n)) : n;
  if (seconds <= 0) seconds = 1;
  std::vector<double> top(n, 0.0);  // stacked totals
  bool any = false;
  double ymax = 0, ymin = std::numeric_limits<double>::infinity();
  double pos_min = std::numeric_limits<double>::infinity();
  for (const auto& s : c.stacked)
    for (std::size_t i = 0; i < s.values.size(); ++i)
      if (std::isfinite(s.values[i])) {
        top[i] += std::max(0.0, s.values[i]);
        any = true;
      }
  for (double t : top) ymax = std::max(ymax, t);
  for (const auto& s : c.lines)
    for (double v : s.values)
      if (std::isfinite(v)) {
        any = true;
        ymax = std::max(ymax, v);
        ymin = std::min(ymin, v);
        if (v > 0) pos_min = std::min(pos_min, v);
      }
  bool log = false;
  if (std::isfinite(pos_min) && c.stacked.empty()) {
    log = c.y_scale == YScale::log ||
          (c.y_scale == YScale::auto_log && ymax / pos_min > c.auto_log_ratio);
  }
  YMap y;
  y.axis = log ? log_axis(pos_min, ymax)
               : linear_axis(std::isfinite(ymin) ? ymin : 0, ymax, 6, c.integer_y);
  XMap x;
  x.seconds = seconds;

  // ---- layout --------------------------------------------------------------------------
  struct LegendItem {
    const ChartSeries* s;
    bool area;
    double x, y;
  };
  std::vector<LegendItem> legend;
  double lx = kLeft, rows = 0;
  auto place = [&](const ChartSeries& s, bool area) {
    double w = 18 + 6 + text_width(s.name, kSmallFont) + 14;
    if (lx + w > kWidth - kRight && lx > kLeft) {
      lx = kLeft;
      ++rows;
    }
    legend.push_back({&s, area, lx, rows});
    lx += w;
  };
  for (const auto& s : c.stacked) place(s, true);
  for (const auto& s : c.lines) place(s, false);
  double legend_top = 34;
  double legend_bottom = legend.empty() ? legend_top - 6 : legend_top + (rows + 1) * kRow;

  double strip_top = legend_bottom + 4;
  double phase_h = c.phases.empty() ? 0 : kStripRow;
  // Fault labels: greedy rows so that no two labels overlap.
  struct FaultLabel {
    double x0, x1;
    std::string text;
    int row;
  };
  std::vector<FaultLabel> fault_labels;
  std::vector<double> row_end;
  for (const auto& f : c.faults) {
    double from, to;
    if (!clamp_span(f, seconds, from, to)) {
      fault_labels.push_back({0, 0, "", -1});
      continue;
    }
    double x0 = x(from), x1 = std::max(x(to), x0 + 2);
    double want = text_width(f.name, kSmallFont) + 8;
    int row = -1;
    for (std::size_t r = 0; r < row_end.size(); ++r)
      if (row_end[r] <= x0) {
        row = static_cast<int>(r);
        break;
      }
    if (row < 0 && static_cast<int>(row_end.size()) < kMaxFaultRows) {
      row = static_cast<int>(row_end.size());
      row_end.push_back(0);
    }
    std::string label;
    if (row < 0) {  // crowded: the row that frees up first, label cut to the band
      row = static_cast<int>(std::min_element(row_end.begin(), row_end.end()) - row_end.begin());
      label = fit(f.name, x1 - x0 - 6, kSmallFont);
    } else {
      label = fit(f.name, kWidth - kRight - x0 - 6, kSmallFont);
    }
    row_end[static_cast<std::size_t>(row)] = std::max(x1, x0 + std::min(want, kWidth));
    fault_labels.push_back({x0, x1, label, row});
  }
  double fault_h = static_cast<double>(row_end.size()) * kStripRow;
  double plot_top = strip_top + phase_h + fault_h + (phase_h + fault_h > 0 ? 4 : 8);
  double plot_bottom = plot_top + kPlotHeight;
  double height = plot_bottom + 44;
  y.top = plot_top;
  y.bottom = plot_bottom;
  const double plot_left = kLeft, plot_right = kWidth - kRight;

  // ---- output --------------------------------------------------------------------------
  std::string out;
  out.reserve(16384);
  std::string id = escaped(c.id);
  out.append("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 ");
  num(out, kWidth);
  out.push_back(' ');
  num(out, height);
  out.append("\" width=\"100%\" role=\"img\" aria-labelledby=\"" + id + "-title\" id=\"" + id +
             "\" data-y-scale=\"" + (log ? "log" : "linear") +
             "\" font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\" "
             "font-size=\"");
  num(out, kFont);
  out.append("\"><title id=\"" + id + "-title\">");
  append_escaped(out, c.title);
  out.append("</title><clipPath id=\"" + id + "-clip\">");
  rect(out, plot_left, plot_top - 1, plot_right - plot_left, plot_bottom - plot_top + 2);
  out.append("/></clipPath>");

  text(out, 0, 20, c.title,
       std::string("font-size=\"15\" font-weight=\"600\" fill=\"") + kInk + "\"");
  if (log)
    text(out, kWidth - kRight, 20, "log scale",
         "text-anchor=\"end\" fill=\"#5b6375\" font-size=\"12\"");

  // Legend.
  for (const auto& item : legend) {
    double cy = legend_top + item.y * kRow + kRow / 2;
    out.append("<g class=\"legend\">");
    if (item.area) {
      rect(out, item.x, cy - 6, 18, 12);
      out.append(" rx=\"2\" fill=\"");
      append_escaped(out, item.s->color);
      out.append("\"/>");
    } else {
      line(out, item.x, cy, item.x + 18, cy);
      out.append(" stroke-width=\"2.5\" stroke=\"");
      append_escaped(out, item.s->color);
      out.append(item.s->dashed ? "\" stroke-dasharray=\"5 3\"/>" : "\"/>");
    }
    text(out, item.x + 24, cy + 4, item.s->name, "font-size=\"12\" fill=\"#1d2330\"");
    out.append("</g>");
  }

  // Gridlines and y ticks.
  out.append("<g class=\"grid\" stroke=\"");
  out.append(kGrid);
  out.append("\" stroke-width=\"1\">");
  for (double t : y.axis.ticks) {
    line(out, plot_left, y(t), plot_right, y(t));
    out.append("/>");
  }
  out.append("</g><g class=\"y-ticks\" fill=\"");
  out.append(kMuted);
  out.append("\" text-anchor=\"end\" font-size=\"12\">");
  for (double t : y.axis.ticks) text(out, plot_left - 8, y(t) + 4, tick_label(t, y.axis), "");
  out.append("</g>");
  std::string unit_attr =
      "text-anchor=\"middle\" fill=\"#5b6375\" font-size=\"12\" transform=\"rotate(-90 ";
  num(unit_attr, 14);
  unit_attr.push_back(' ');
  num(unit_attr, (plot_top + plot_bottom) / 2);
  unit_attr.append(")\"");
  text(out, 14, (plot_top + plot_bottom) / 2, c.unit, unit_attr);

  // Stacked step areas: a polygon per layer, top edge left to right, bottom edge back.
  std::vector<double> base(n, 0.0);
  out.append("<g class=\"areas\" clip-path=\"url(#" + id + "-clip)\">");
  for (const auto& s : c.stacked) {
    std::vector<double> upper = base;
    for (std::size_t i = 0; i < s.values.size(); ++i)
      if (std::isfinite(s.values[i])) upper[i] += std::max(0.0, s.values[i]);
    if (n > 0) {
      std::string d = "M";
      for (std::size_t i = 0; i < n; ++i) {
        if (i > 0) d.push_back('L');
        num(d, x(static_cast<double>(i)));
        d.push_back(' ');
        num(d, y(upper[i]));
        d.push_back('L');
        num(d, x(static_cast<double>(i + 1)));
        d.push_back(' ');
        num(d, y(upper[i]));
      }
      for (std::size_t i = n; i-- > 0;) {
        d.push_back('L');
        num(d, x(static_cast<double>(i + 1)));
        d.push_back(' ');
        num(d, y(base[i]));
        d.push_back('L');
        num(d, x(static_cast<double>(i)));
        d.push_back(' ');
        num(d, y(base[i]));
      }
      d.push_back('Z');
      out.append("<path class=\"area\" data-name=\"");
      append_escaped(out, s.name);
      out.append("\" fill=\"");
      append_escaped(out, s.color);
      out.append("\" d=\"" + d + "\"/>");
    }
    base = std::move(upper);
  }
  out.append("</g>");

  // Fault bands: over the areas (translucent), under the lines; a tab with the name above.
  out.append("<g class=\"faults\">");
  for (std::size_t i = 0; i < c.faults.size(); ++i) {
    const FaultLabel& l = fault_labels[i];
    if (l.row < 0) continue;
    double tab_top = strip_top + phase_h + l.row * kStripRow;
    out.append("<g class=\"fault\" data-name=\"");
    append_escaped(out, c.faults[i].name);
    out.append("\"><title>");
    append_escaped(out, c.faults[i].name);
    char span_text[96];
    std::snprintf(span_text, sizeof span_text, " (fault, %.6g s to %.6g s)", c.faults[i].from_s,
                  c.faults[i].to_s);
    append_escaped(out, span_text);
    out.append("</title>");
    rect(out, l.x0, plot_top, l.x1 - l.x0, plot_bottom - plot_top);
    out.append(" class=\"band\" fill=\"");
    out.append(kFault);
    out.append("\" fill-opacity=\"0.13\" stroke=\"");
    out.append(kFault);
    out.append("\" stroke-opacity=\"0.55\" stroke-width=\"1\"/>");
    rect(out, l.x0, tab_top + 2, l.x1 - l.x0, kStripRow - 3);
    out.append(" fill=\"");
    out.append(kFault);
    out.append("\" fill-opacity=\"0.28\"/>");
    if (!l.text.empty()) {
      text(out, l.x0 + 4, tab_top + kStripRow - 4, l.text,
           std::string("font-size=\"12\" font-weight=\"600\" fill=\"") + kFaultText + "\"");
    }
    out.append("</g>");
  }
  out.append("</g>");

  // Phase dividers, with their names in the strip above the faults.
  out.append("<g class=\"phases\">");
  for (std::size_t i = 0; i < c.phases.size(); ++i) {
    double from, to;
    if (!clamp_span(c.phases[i], seconds, from, to)) continue;
    double px = x(from);
    double next = plot_right;
    for (const auto& p : c.phases)
      if (std::isfinite(p.from_s) && p.from_s > c.phases[i].from_s)
        next = std::min(next, x(p.from_s));
    out.append("<g class=\"phase\" data-name=\"");
    append_escaped(out, c.phases[i].name);
    out.append("\"><title>");
    append_escaped(out, c.phases[i].name);
    out.append(" (phase)</title>");
    line(out, px, strip_top + 1, px, plot_bottom);
    out.append(" stroke=\"#5b6375\" stroke-width=\"1\" stroke-dasharray=\"4 3\"/>");
    std::string label = fit(c.phases[i].name, next - px - 10, kSmallFont);
    if (!label.empty()) {
      text(out, px + 4, strip_top + kStripRow - 4, label,
           "font-size=\"12\" font-style=\"italic\" fill=\"#5b6375\"");
    }
    out.append("</g>");
  }
  out.append("</g>");

  // Lines.
  out.append("<g class=\"lines\" clip-path=\"url(#" + id + "-clip)\">");
  for (const auto& s : c.lines) line_path(out, s, x, y, n);
  out.append("</g>");

  // Axes and x ticks.
  out.append("<g class=\"axes\" stroke=\"");
  out.append(kAxis);
  out.append("\" stroke-width=\"1\">");
  line(out, plot_left, plot_bottom, plot_right, plot_bottom);
  out.append("/>");
  line(out, plot_left, plot_top, plot_left, plot_bottom);
  out.append("/>");
  Axis xa = linear_axis(0, seconds, 11, true);
  std::vector<double> xticks;
  for (double t : xa.ticks)
    if (t >= 0 && t <= seconds + 1e-9) xticks.push_back(t);
  for (double t : xticks) {
    line(out, x(t), plot_bottom, x(t), plot_bottom + 5);
    out.append("/>");
  }
  out.append("</g><g class=\"x-ticks\" fill=\"");
  out.append(kMuted);
  out.append("\" text-anchor=\"middle\" font-size=\"12\">");
  for (double t : xticks) text(out, x(t), plot_bottom + 18, tick_label(t, xa), "");
  out.append("</g>");
  text(out, (plot_left + plot_right) / 2, plot_bottom + 37, "time since start (s)",
       "text-anchor=\"middle\" fill=\"#5b6375\" font-size=\"12\"");
  if (!any) {
    text(out, (plot_left + plot_right) / 2, (plot_top + plot_bottom) / 2, c.empty_text,
         std::string("text-anchor=\"middle\" fill=\"") + kMuted + "\" font-size=\"14\"");
  }
  out.append("</svg>");
  return out;
}

}  // namespace bulwark::drill
