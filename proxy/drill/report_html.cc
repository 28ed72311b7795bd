// The drill report as one self-contained HTML document: inline CSS, inline SVG charts
// (svg_chart.cc), no script, nothing fetched from anywhere. Every string that came from the
// scenario or the run is escaped.
#include <algorithm>
#include <array>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <string>

#include "drill/model.h"
#include "drill/svg_chart.h"

namespace bulwark::drill {
namespace {

// One colour per Outcome, in enum order: Paul Tol's "muted" scheme (readable with the
// common colour-vision deficiencies) plus two greys for the classes that are not replies.
constexpr std::array<const char*, kOutcomes> kOutcomeColors = {
    "#44AA99",  // ok: teal
    "#DDCC77",  // shed: sand
    "#88CCEE",  // rate-limited: cyan
    "#AA4499",  // circuit-open: purple
    "#999933",  // local-error: olive
    "#332288",  // upstream-4xx: indigo
    "#CC6677",  // upstream-5xx: rose
    "#882255",  // timeout: wine
    "#555555",  // conn-error: dark grey
    "#BBBBBB",  // overflow: light grey
};
// Lines: Okabe-Ito, vermillion left out (it is the fault bands' colour).
constexpr std::array<const char*, 7> kLineColors = {
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#1d2330", "#999933",
};
constexpr char kOfferedColor[] = "#1d2330";

constexpr char kStyle[] = R"css(
:root { --bg:#f6f7f9; --fg:#1d2330; --muted:#5b6375; --line:#dde1e8; --card:#fff;
        --ok:#146c2e; --bad:#b71c1c; }
* { box-sizing:border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       background:var(--bg); color:var(--fg); }
main { max-width:1240px; margin:0 auto; padding:16px 20px 32px; display:grid;
       grid-template-columns:minmax(0, 1fr); gap:16px; }
section, header.run { background:var(--card); border:1px solid var(--line); border-radius:6px;
                      padding:14px 16px; min-width:0; }
header.run .top { display:flex; flex-wrap:wrap; gap:12px 24px; align-items:center;
                  justify-content:space-between; }
h1 { font-size:22px; margin:0; overflow-wrap:anywhere; }
h1 .kind { color:var(--muted); font-weight:400; font-size:15px; display:block; }
h2 { font-size:16px; margin:0 0 10px; }
h3 { font-size:14px; margin:14px 0 6px; }
p.desc { margin:6px 0 0; color:var(--muted); max-width:80ch; overflow-wrap:anywhere;
         white-space:pre-line; }
.verdict { font-size:30px; font-weight:800; letter-spacing:.06em; padding:6px 22px;
           border-radius:6px; color:#fff; white-space:nowrap; }
.verdict.passed { background:var(--ok); }
.verdict.failed { background:var(--bad); }
dl.facts { display:grid; grid-template-columns:repeat(auto-fill, minmax(190px, 1fr));
           gap:10px 20px; margin:14px 0 0; }
dl.facts div { min-width:0; }
dl.facts dt { color:var(--muted); font-size:12px; }
dl.facts dd { margin:0; font-variant-numeric:tabular-nums; overflow-wrap:anywhere; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:5px 10px; border-bottom:1px solid var(--line);
         vertical-align:top; }
thead th { color:var(--muted); font-weight:600; font-size:12px; white-space:nowrap; }
th.num, td.num { text-align:right; white-space:nowrap; }
td.text { min-width:16em; overflow-wrap:anywhere; }
td.detail { color:var(--muted); overflow-wrap:anywhere; }
table.compact { width:auto; min-width:260px; }
.mark { font-weight:700; white-space:nowrap; }
.mark.pass { color:var(--ok); }
.mark.fail { color:var(--bad); }
tr.failed td { background:#fdf1f1; }
.charts { display:grid; grid-template-columns:minmax(0, 1fr); gap:18px; }
figure { margin:0; min-width:0; }
figure svg { display:block; width:100%; height:auto; }
figcaption { color:var(--muted); font-size:12px; margin-top:2px; }
.side { display:flex; flex-wrap:wrap; gap:8px 40px; }
.side > div { min-width:0; max-width:100%; }
.muted { color:var(--muted); }
footer { color:var(--muted); font-size:12px; text-align:center; padding:0 20px 24px; }
)css";

std::string with_separators(std::uint64_t v) { return group_thousands(std::to_string(v)); }

// A finite number with up to `decimals` decimals (trailing zeros dropped unless `fixed`, for
// table columns) and thousands separators; "n/a" for NaN and infinities.
std::string number(double v, int decimals = 2, bool fixed = false) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, std::fabs(v));
  std::string s = buf;
  if (!fixed && s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  std::size_t end = std::min(s.find('.'), s.size());
  std::string grouped = group_thousands(s.substr(0, end)) + s.substr(end);
  return v < 0 && grouped != "0" ? "-" + grouped : grouped;
}

// An objective's measured value: integers exactly, small values with four significant
// digits, larger ones with one or two decimals.
std::string measured(double v) {
  if (!std::isfinite(v)) return "n/a";
  double a = std::fabs(v);
  if (a == std::floor(a) && a < 1e15) return number(v, 0);
  if (a >= 100) return number(v, 1);
  if (a >= 1) return number(v, 2);
  int decimals = a > 0 ? std::clamp(3 - static_cast<int>(std::floor(std::log10(a))), 2, 9) : 2;
  return number(v, decimals);
}

std::string ms(double v) { return number(v, std::fabs(v) < 10 ? 2 : 1, true); }

std::string seconds_text(double s) { return number(s, 1) + " s"; }

std::string lag_text(std::int64_t us) {
  if (us < 1000 && us > -1000) return std::to_string(us) + " \xC2\xB5s";
  return number(static_cast<double>(us) / 1000.0, 1) + " ms";
}

void fact(std::string& out, const char* name, const std::string& value, const char* id = "") {
  out.append("<div><dt>");
  out.append(name);
  out.append("</dt><dd");
  if (*id) {
    out.append(" id=\"");
    out.append(id);
    out.append("\"");
  }
  out.append(">");
  append_escaped(out, value);
  out.append("</dd></div>");
}

void header(std::string& out, const Report& r) {
  out.append(
      "<header class=\"run\"><div class=\"top\"><h1><span class=\"kind\">Drill report</span>");
  out.append("<span id=\"scenario\">");
  append_escaped(out, r.scenario.empty() ? "(unnamed scenario)" : r.scenario);
  out.append("</span></h1><div id=\"verdict\" class=\"verdict ");
  out.append(r.passed ? "passed\" data-passed=\"true\">PASSED"
                      : "failed\" data-passed=\"false\">FAILED");
  out.append("</div></div>");
  if (!r.description.empty()) {
    out.append("<p class=\"desc\">");
    append_escaped(out, r.description);
    out.append("</p>");
  }
  out.append("<dl class=\"facts\">");
  fact(out, "target", r.target.empty() ? "n/a" : r.target, "target");
  fact(out, "started at", r.started_at.empty() ? "n/a" : r.started_at);
  fact(out, "duration", seconds_text(r.duration_s));
  fact(out, "offered rate (average)", number(r.offered_rate_avg, 1) + " req/s");
  fact(out, "achieved rate", number(r.achieved_rate, 1) + " req/s");
  fact(out, "max start lag", lag_text(r.max_start_lag_us));
  std::string scrape = r.scraped ? "scraped every second" : "not scraped";
  if (r.scraped || r.scrape_errors > 0) {
    scrape +=
        ", " + with_separators(r.scrape_errors) + (r.scrape_errors == 1 ? " error" : " errors");
  }
  fact(out, "metrics", scrape);
  if (!r.file.empty()) fact(out, "scenario file", r.file);
  out.append("</dl></header>");
}

void objectives(std::string& out, const Report& r) {
  out.append("<section id=\"objectives\"><h2>Objectives</h2>");
  if (r.objectives.empty()) {
    out.append("<p class=\"muted\">The scenario sets no objective.</p></section>");
    return;
  }
  std::size_t passed = 0;
  for (const auto& o : r.objectives) passed += o.passed;
  out.append("<p class=\"muted\">" + std::to_string(passed) + " of " +
             std::to_string(r.objectives.size()) + " held.</p>");
  out.append(
      "<div class=\"scroll\"><table><thead><tr><th scope=\"col\">objective</th>"
      "<th scope=\"col\" class=\"num\">measured</th><th scope=\"col\">result</th>"
      "<th scope=\"col\">detail</th></tr></thead><tbody>");
  for (const auto& o : r.objectives) {
    out.append(o.passed ? "<tr class=\"passed\">" : "<tr class=\"failed\">");
    out.append("<td class=\"text\">");
    append_escaped(out, o.text);
    out.append("</td><td class=\"num\">");
    append_escaped(out, measured(o.measured));
    out.append(o.passed ? "</td><td><span class=\"mark pass\">\xE2\x9C\x93 pass</span>"
                        : "</td><td><span class=\"mark fail\">\xE2\x9C\x97 fail</span>");
    out.append("</td><td class=\"detail\">");
    append_escaped(out, o.detail);
    out.append("</td></tr>");
  }
  out.append("</tbody></table></div></section>");
}

void figure(std::string& out, const Chart& c, const char* caption) {
  out.append("<figure>");
  out.append(render_chart(c));
  if (*caption) {
    out.append("<figcaption>");
    out.append(caption);
    out.append("</figcaption>");
  }
  out.append("</figure>");
}

void charts(std::string& out, const Report& r) {
  double seconds = std::isfinite(r.duration_s) ? std::max(r.duration_s, 0.0) : 0.0;
  seconds = std::max(seconds, static_cast<double>(r.offered.size()));
  std::vector<ChartSpan> faults, phases;
  for (const auto& f : r.faults) faults.push_back({f.name, f.from_s, f.to_s});
  for (const auto& p : r.phases) phases.push_back({p.name, p.from_s, p.to_s});

  out.append("<section id=\"charts\"><h2>Over time</h2><div class=\"charts\">");
  Chart load;
  load.id = "chart-load";
  load.title = "Load and outcomes";
  load.unit = "requests per second";
  load.seconds = seconds;
  load.integer_y = true;
  load.faults = faults;
  load.phases = phases;
  for (int k = 0; k < kOutcomes; ++k) {
    const auto& v = r.outcomes[k];
    if (std::any_of(v.begin(), v.end(), [](double x) { return std::isfinite(x) && x > 0; })) {
      load.stacked.push_back({outcome_name(static_cast<Outcome>(k)), v, kOutcomeColors[k]});
    }
  }
  load.lines.push_back({"offered", r.offered, kOfferedColor, false, true});
  figure(out, load,
         "Stacked: how the requests scheduled to start in each second ended. Line: requests "
         "offered (scheduled) in that second.");

  Chart latency;
  latency.id = "chart-latency";
  latency.title = "Latency of successful requests";
  latency.unit = "milliseconds";
  latency.seconds = seconds;
  latency.y_scale = YScale::auto_log;
  latency.faults = faults;
  latency.phases = phases;
  latency.lines.push_back({"p50", r.p50_ms, kLineColors[0]});
  latency.lines.push_back({"p99", r.p99_ms, kLineColors[1]});
  latency.lines.push_back({"max", r.max_ms, kLineColors[3], true});
  latency.empty_text = "no successful request";
  figure(out, latency,
         "Per second of scheduled start, of the responses that ended ok; a gap is a second "
         "with none.");

  for (std::size_t i = 0; i < r.controls.size(); ++i) {
    const ControlChart& cc = r.controls[i];
    Chart c;
    c.id = "chart-control-" + std::to_string(i + 1);
    c.title = cc.title;
    c.unit = cc.unit;
    c.seconds = seconds;
    c.faults = faults;
    c.phases = phases;
    for (std::size_t s = 0; s < cc.series.size(); ++s) {
      c.lines.push_back(
          {cc.series[s].name, cc.series[s].values, kLineColors[s % kLineColors.size()]});
    }
    c.empty_text = "no value scraped";
    // Counts (endpoints, breakers open) get whole-number ticks.
    c.integer_y = std::all_of(cc.series.begin(), cc.series.end(), [](const Series& s) {
      return std::all_of(s.values.begin(), s.values.end(),
                         [](double v) { return !std::isfinite(v) || v == std::floor(v); });
    });
    figure(out, c, "");
  }
  if (r.controls.empty()) {
    out.append("<p class=\"muted\">No control state: Bulwark's /metrics was not scraped.</p>");
  }
  out.append("</div>");

  if (!r.phases.empty() || !r.faults.empty()) {
    out.append(
        "<h3>Schedule</h3><div class=\"scroll\"><table class=\"compact\"><thead><tr>"
        "<th scope=\"col\">kind</th><th scope=\"col\">name</th>"
        "<th scope=\"col\" class=\"num\">from</th><th scope=\"col\" class=\"num\">to</th>"
        "</tr></thead><tbody>");
    auto row = [&](const char* kind, const Span& s) {
      out.append("<tr><td>");
      out.append(kind);
      out.append("</td><td>");
      append_escaped(out, s.name);
      out.append("</td><td class=\"num\">" + seconds_text(s.from_s) + "</td><td class=\"num\">" +
                 seconds_text(s.to_s) + "</td></tr>");
    };
    for (const auto& p : r.phases) row("phase", p);
    for (const auto& f : r.faults) row("fault", f);
    out.append("</tbody></table></div>");
  }
  out.append("</section>");
}

void counts_table(std::string& out, const char* id, const char* title, const char* what,
                  const std::vector<std::pair<std::string, std::uint64_t>>& rows) {
  out.append("<div id=\"");
  out.append(id);
  out.append("\"><h3>");
  out.append(title);
  out.append("</h3>");
  if (rows.empty()) {
    out.append("<p class=\"muted\">none</p></div>");
    return;
  }
  std::uint64_t total = 0;
  for (const auto& row : rows) total += row.second;
  out.append("<div class=\"scroll\"><table class=\"compact\"><thead><tr><th scope=\"col\">");
  out.append(what);
  out.append(
      "</th><th scope=\"col\" class=\"num\">requests</th><th scope=\"col\" class=\"num\">"
      "share</th></tr></thead><tbody>");
  for (const auto& [name, count] : rows) {
    out.append("<tr><td>");
    append_escaped(out, name);
    out.append("</td><td class=\"num\">" + with_separators(count) + "</td><td class=\"num\">");
    out.append(total > 0
                   ? number(100.0 * static_cast<double>(count) / static_cast<double>(total), 1) +
                         " %"
                   : std::string("n/a"));
    out.append("</td></tr>");
  }
  out.append("</tbody></table></div></div>");
}

void summary(std::string& out, const Report& r) {
  out.append("<section id=\"summary\"><h2>Summary</h2><h3>By priority</h3>");
  if (r.priorities.empty()) {
    out.append("<p class=\"muted\">No request was sent.</p>");
  } else {
    // Outcome columns: ok always, the others only when some request ended that way.
    std::vector<int> shown;
    std::string omitted;
    for (int k = 0; k < kOutcomes; ++k) {
      bool any = k == 0;
      for (const auto& p : r.priorities) any = any || p.counts[k] > 0;
      if (any) {
        shown.push_back(k);
      } else {
        omitted += omitted.empty() ? "" : ", ";
        omitted += outcome_name(static_cast<Outcome>(k));
      }
    }
    out.append(
        "<div class=\"scroll\"><table id=\"priorities\"><thead><tr>"
        "<th scope=\"col\">priority</th><th scope=\"col\" class=\"num\">sent</th>");
    for (int k : shown) {
      out.append("<th scope=\"col\" class=\"num\">");
      out.append(outcome_name(static_cast<Outcome>(k)));
      out.append("</th>");
    }
    out.append(
        "<th scope=\"col\" class=\"num\">success</th><th scope=\"col\" class=\"num\">p50 ms"
        "</th><th scope=\"col\" class=\"num\">p90 ms</th><th scope=\"col\" class=\"num\">"
        "p99 ms</th><th scope=\"col\" class=\"num\">p99.9 ms</th><th scope=\"col\" "
        "class=\"num\">max ms</th></tr></thead><tbody>");
    for (const auto& p : r.priorities) {
      out.append("<tr><th scope=\"row\">");
      append_escaped(out, p.name);
      out.append("</th><td class=\"num\">" + with_separators(p.sent) + "</td>");
      for (int k : shown) out.append("<td class=\"num\">" + with_separators(p.counts[k]) + "</td>");
      out.append("<td class=\"num\">");
      out.append(std::isfinite(p.success_ratio) ? number(100.0 * p.success_ratio, 2, true) + " %"
                                                : std::string("n/a"));
      out.append("</td>");
      for (double v : {p.latency.p50, p.latency.p90, p.latency.p99, p.latency.p999, p.latency.max})
        out.append("<td class=\"num\">" + ms(v) + "</td>");
      out.append("</tr>");
    }
    out.append("</tbody></table></div>");
    if (!omitted.empty()) {
      out.append("<p class=\"muted\">No request ended as: " + omitted + ".</p>");
    }
  }
  out.append("<div class=\"side\">");
  counts_table(out, "statuses", "Statuses", "status", r.statuses);
  counts_table(out, "reasons", "Bulwark reasons (x-bulwark-reason)", "reason", r.reasons);
  out.append("</div></section>");
}

}  // namespace

std::string render_html(const Report& r) {
  std::string out;
  out.reserve(65536);
  out.append(
      "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
  append_escaped(out, "Drill " + (r.scenario.empty() ? std::string("report") : r.scenario) +
                          (r.passed ? ": PASSED" : ": FAILED"));
  out.append("</title>\n<style>");
  out.append(kStyle);
  out.append("</style>\n</head>\n<body>\n<main>\n");
  header(out, r);
  out.push_back('\n');
  objectives(out, r);
  out.push_back('\n');
  charts(out, r);
  out.push_back('\n');
  summary(out, r);
  out.append(
      "\n</main>\n<footer>Written by bulwark-drill. Requests are counted in the second "
      "they were scheduled to start.</footer>\n</body>\n</html>\n");
  return out;
}

}  // namespace bulwark::drill
