// The drill report: the HTML document (report_html.cc, its charts from svg_chart.cc) and the
// JSON summary (report_json.cc), from a synthetic 30-second run with a fault, two phases,
// two control charts, NaN gaps and three priorities, and from an empty Report.
#include <doctest/doctest.h>

#include <cctype>
#include <cmath>
#include <limits>
#include <string>
#include <string_view>

#include "drill/model.h"
#include "drill/svg_chart.h"

namespace bulwark::drill {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Report synthetic_report() {
  Report r;
  r.scenario = "spike <script>alert(1)</script>";
  r.description = "Best-effort load x4 & one endpoint failing";
  r.file = "config/drills/spike.yaml";
  r.target = "http://127.0.0.1:8080/api?a=1&b=\"2\"";
  r.started_at = "2024-05-01T12:00:00Z";
  r.duration_s = 30;
  r.offered_rate_avg = 300;
  r.achieved_rate = 290.5;
  r.max_start_lag_us = 1840;
  r.scraped = true;
  r.scrape_errors = 2;
  for (int i = 0; i < 30; ++i) {
    bool spike = i >= 10 && i < 20;
    double offered = spike ? 600 : 150;
    r.offered.push_back(offered);
    for (int k = 0; k < kOutcomes; ++k) r.outcomes[k].push_back(0);
    double shed = spike ? 200 : 0, five = (i >= 14 && i < 18) ? 30 : 0;
    r.outcomes[static_cast<int>(Outcome::ok)].back() = offered - shed - five;
    r.outcomes[static_cast<int>(Outcome::shed)].back() = shed;
    r.outcomes[static_cast<int>(Outcome::upstream_5xx)].back() = five;
    bool gap = i == 5 || i == 6;  // no ok response those seconds
    r.p50_ms.push_back(gap ? kNaN : 4 + (spike ? 5 : 0));
    r.p99_ms.push_back(gap ? kNaN : 12 + (spike ? 80 : 0));
    r.max_ms.push_back(gap ? kNaN : (i == 15 ? 2500 : 20 + (spike ? 400 : 0)));
  }
  ControlChart limits{"Concurrency limit and queue", "requests", {}};
  Series limit{"limit", {}}, queued{"queued", {}};
  for (int i = 0; i < 30; ++i) {
    limit.values.push_back(i < 3 ? kNaN : 40 - (i >= 10 && i < 20 ? i - 10 : 0));
    queued.values.push_back(i == 12 ? kNaN : (i >= 10 && i < 20 ? 60 : 0));
  }
  limits.series = {limit, queued};
  ControlChart breakers{"Breakers open", "endpoints", {{"open (app)", std::vector<double>(30, 0)}}};
  for (int i = 14; i < 22; ++i) breakers.series[0].values[static_cast<std::size_t>(i)] = 1;
  r.controls = {limits, breakers};
  r.phases = {{"steady", 0, 10}, {"spike <b>", 10, 30}};
  r.faults = {{"backend 503 & slow", 14, 18}};

  PrioritySummary all{"all", 9000, {}, 0.95, {4.5, 9, 60, 300, 2500}};
  all.counts[static_cast<int>(Outcome::ok)] = 8560;
  all.counts[static_cast<int>(Outcome::shed)] = 320;
  all.counts[static_cast<int>(Outcome::upstream_5xx)] = 120;
  PrioritySummary critical{"critical", 3000, {}, 0.9987, {4, 8, 40, 200, 900}};
  critical.counts[static_cast<int>(Outcome::ok)] = 2996;
  critical.counts[static_cast<int>(Outcome::upstream_5xx)] = 4;
  PrioritySummary idle{"batch", 0, {}, kNaN, {kNaN, kNaN, kNaN, kNaN, kNaN}};
  r.priorities = {all, critical, idle};
  r.statuses = {{"200", 8560}, {"503", 440}};
  r.reasons = {{"overloaded", 320}};
  r.objectives = {
      {"success ratio of critical >= 0.99", 0.9987, true, "2,996 of 3,000 requests"},
      {"p99 of critical <= 50ms", 62.5, false, "p99 was 62.5 ms <during spike>"},
      {"recovers within 5s", kNaN, false, "not measured"},
  };
  r.passed = false;
  return r;
}

std::size_t count(std::string_view text, std::string_view what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string_view::npos; pos = text.find(what, pos + 1))
    ++n;
  return n;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Every attribute value of every element: none may hold "nan" or "inf" (a coordinate that
// went through a division by zero, or a NaN sample drawn as a point).
void check_no_nonfinite_attributes(std::string_view html) {
  for (auto pos = html.find("=\""); pos != std::string_view::npos;
       pos = html.find("=\"", pos + 2)) {
    auto end = html.find('"', pos + 2);
    REQUIRE(end != std::string_view::npos);
    std::string value = lower(html.substr(pos + 2, end - pos - 2));
    INFO("attribute value: " << value);
    CHECK(value.find("nan") == std::string::npos);
    CHECK(value.find("inf") == std::string::npos);
    pos = end;
  }
}

// The `d` of the path of the series named `name` in the chart with id `chart`.
std::string series_path(std::string_view html, std::string_view chart, std::string_view name) {
  auto start = html.find(std::string("id=\"") + std::string(chart) + "\"");
  if (start == std::string_view::npos) return {};
  auto stop = html.find("</svg>", start);
  auto g =
      html.find(std::string("class=\"series\" data-name=\"") + std::string(name) + "\"", start);
  if (g == std::string_view::npos || g > stop) return {};
  auto d = html.find(" d=\"", g);
  if (d == std::string_view::npos || d > stop) return {};
  return std::string(html.substr(d + 4, html.find('"', d + 4) - d - 4));
}

// A strict recursive-descent JSON validator (RFC 8259 grammar, no extensions).
class JsonValidator {
 public:
  explicit JsonValidator(std::string_view s) : s_(s) {}
  bool valid() {
    ws();
    if (!value()) return false;
    ws();
    return i_ == s_.size();
  }

 private:
  bool value() {
    if (i_ >= s_.size()) return false;
    switch (s_[i_]) {
      case '{':
        return object();
      case '[':
        return array();
      case '"':
        return string();
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number();
    }
  }
  bool object() {
    ++i_;
    ws();
    if (peek('}')) return ++i_, true;
    for (;;) {
      ws();
      if (!peek('"') || !string()) return false;
      ws();
      if (!peek(':')) return false;
      ++i_;
      ws();
      if (!value()) return false;
      ws();
      if (peek('}')) return ++i_, true;
      if (!peek(',')) return false;
      ++i_;
    }
  }
  bool array() {
    ++i_;
    ws();
    if (peek(']')) return ++i_, true;
    for (;;) {
      ws();
      if (!value()) return false;
      ws();
      if (peek(']')) return ++i_, true;
      if (!peek(',')) return false;
      ++i_;
    }
  }
  bool string() {
    ++i_;
    while (i_ < s_.size()) {
      auto c = static_cast<unsigned char>(s_[i_++]);
      if (c == '"') return true;
      if (c < 0x20) return false;
      if (c == '\\') {
        if (i_ >= s_.size()) return false;
        char e = s_[i_++];
        if (e == 'u') {
          for (int k = 0; k < 4; ++k)
            if (i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_++])))
              return false;
        } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
          return false;
        }
      }
    }
    return false;
  }
  bool number() {
    std::size_t start = i_;
    if (peek('-')) ++i_;
    if (peek('0')) {
      ++i_;
    } else if (!digits()) {
      return false;
    }
    if (peek('.')) {
      ++i_;
      if (!digits()) return false;
    }
    if (peek('e') || peek('E')) {
      ++i_;
      if (peek('+') || peek('-')) ++i_;
      if (!digits()) return false;
    }
    return i_ > start;
  }
  bool digits() {
    std::size_t start = i_;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
    return i_ > start;
  }
  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  bool peek(char c) const { return i_ < s_.size() && s_[i_] == c; }
  void ws() {
    while (i_ < s_.size() && std::string_view(" \t\r\n").find(s_[i_]) != std::string_view::npos)
      ++i_;
  }
  std::string_view s_;
  std::size_t i_ = 0;
};

bool valid_json(std::string_view s) { return JsonValidator(s).valid(); }

}  // namespace

TEST_CASE("drill report: the JSON validator of these tests rejects what it should") {
  CHECK(valid_json(R"({"a":[1,-2.5e3,null,true,"x\"\u00e9"],"b":{}})"));
  CHECK_FALSE(valid_json(R"({"a":nan})"));
  CHECK_FALSE(valid_json(R"({"a":[1,]})"));
  CHECK_FALSE(valid_json(R"({"a":01})"));
  CHECK_FALSE(valid_json(R"({"a":1}})"));
  CHECK_FALSE(valid_json("{\"a\":\"\x01\"}"));
}

TEST_CASE("drill report: HTML of a 30-second run with a fault, phases and control charts") {
  Report r = synthetic_report();
  std::string html = render_html(r);

  CHECK(html.rfind("<!doctype html>", 0) == 0);
  CHECK(html.find("</html>") != std::string::npos);
  // One chart per: load and outcomes, latency, each control chart.
  CHECK(count(html, "<svg") == 2 + r.controls.size());
  CHECK(count(html, "</svg>") == 2 + r.controls.size());
  CHECK(html.find("id=\"chart-load\"") != std::string::npos);
  CHECK(html.find("id=\"chart-latency\"") != std::string::npos);
  CHECK(html.find("Concurrency limit and queue") != std::string::npos);
  CHECK(html.find("Breakers open") != std::string::npos);

  // Verdict.
  CHECK(html.find("data-passed=\"false\">FAILED<") != std::string::npos);
  CHECK(html.find("PASSED") == std::string::npos);

  // The fault: a band on every chart, its name (escaped) with it; the phases as dividers.
  CHECK(count(html, "class=\"band\"") == 2 + r.controls.size());
  CHECK(count(html, "class=\"fault\" data-name=\"backend 503 &amp; slow\"") ==
        2 + r.controls.size());
  CHECK(count(html, ">backend 503 &amp; slow<") >= 2 + r.controls.size());
  CHECK(count(html, "class=\"phase\" data-name=\"steady\"") == 2 + r.controls.size());
  CHECK(count(html, "class=\"phase\" data-name=\"spike &lt;b&gt;\"") == 2 + r.controls.size());
  CHECK(html.find("spike <b>") == std::string::npos);

  // User text is escaped, never raw.
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("spike &lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
  CHECK(html.find("a=1&amp;b=&quot;2&quot;") != std::string::npos);
  CHECK(html.find("&lt;during spike&gt;") != std::string::npos);
  CHECK(html.find("Best-effort load x4 &amp; one endpoint failing") != std::string::npos);

  // Nothing external: no URL other than the SVG namespace.
  CHECK(count(html, "http://www.w3.org/2000/svg") == 2 + r.controls.size());
  CHECK(count(html, "https://") == 0);
  CHECK(count(html, "src=") == 0);
  CHECK(count(html, "<link") == 0);

  // No NaN or infinity anywhere: not in attributes, not as text.
  check_no_nonfinite_attributes(html);
  std::string low = lower(html);
  CHECK(low.find("nan") == std::string::npos);
  CHECK(low.find("inf") == std::string::npos);

  // Outcomes stacked: the ones that occurred, each with its name; the offered line.
  CHECK(html.find("class=\"area\" data-name=\"ok\"") != std::string::npos);
  CHECK(html.find("class=\"area\" data-name=\"shed\"") != std::string::npos);
  CHECK(html.find("class=\"area\" data-name=\"upstream-5xx\"") != std::string::npos);
  CHECK(html.find("class=\"area\" data-name=\"timeout\"") == std::string::npos);
  CHECK_FALSE(series_path(html, "chart-load", "offered").empty());

  // Latency: spans 4 ms to 2.5 s, so a log scale; the NaN seconds are a gap (two segments),
  // not a drop to zero.
  CHECK(html.find("id=\"chart-latency\" data-y-scale=\"log\"") != std::string::npos);
  std::string p50 = series_path(html, "chart-latency", "p50");
  CHECK(count(p50, "M") == 2);
  CHECK(count(series_path(html, "chart-control-1", "queued"), "M") == 2);
  CHECK(count(series_path(html, "chart-control-1", "limit"), "M") == 1);
  CHECK(html.find("id=\"chart-control-2\" data-y-scale=\"linear\"") != std::string::npos);

  // Objectives: measured values formatted, NaN as n/a, pass and fail marks.
  CHECK(html.find(">0.9987<") != std::string::npos);
  CHECK(html.find(">62.5<") != std::string::npos);
  CHECK(html.find(">n/a<") != std::string::npos);
  CHECK(count(html, "class=\"mark pass\"") == 1);
  CHECK(count(html, "class=\"mark fail\"") == 2);

  // Summary tables.
  CHECK(html.find("id=\"priorities\"") != std::string::npos);
  CHECK(html.find(">critical<") != std::string::npos);
  CHECK(html.find(">99.87 %<") != std::string::npos);
  CHECK(html.find("<td class=\"num\">8.00</td><td class=\"num\">40.0</td>") != std::string::npos);
  CHECK(html.find(">8,560<") != std::string::npos);
  CHECK(html.find(">overloaded<") != std::string::npos);
  CHECK(html.find("No request ended as: rate-limited") != std::string::npos);
}

TEST_CASE("drill report: an empty Report renders, with no NaN or division by zero") {
  Report empty;
  std::string html = render_html(empty);
  CHECK(count(html, "<svg") == 2);
  CHECK(html.find("PASSED") != std::string::npos);
  CHECK(html.find("no data") != std::string::npos);
  check_no_nonfinite_attributes(html);
  CHECK(lower(html).find("nan") == std::string::npos);
  CHECK(lower(html).find("inf") == std::string::npos);
  std::string json = render_json(empty);
  CHECK(valid_json(json));
  CHECK(json.find("\"offered\":[]") != std::string::npos);
  CHECK(json.find("\"passed\":true") != std::string::npos);

  // All-NaN series, a control chart with no value, spans outside the run, NaN numbers.
  Report odd;
  odd.duration_s = kNaN;
  odd.offered = std::vector<double>(5, kNaN);
  odd.p50_ms = odd.p99_ms = odd.max_ms = std::vector<double>(5, kNaN);
  odd.controls = {{"nothing", "", {{"a", std::vector<double>(5, kNaN)}, {"b", {}}}},
                  {"huge", "x", {{"v", {1e300, -1e300, 0}}}}};
  odd.faults = {{"after the end", 50, 60}, {"backwards", 3, 1}, {"not a number", kNaN, 2}};
  odd.phases = {{"p", -5, kNaN}};
  odd.offered_rate_avg = kNaN;
  odd.objectives = {{"x", std::numeric_limits<double>::infinity(), false, ""}};
  odd.priorities = {{"all", 0, {}, kNaN, {kNaN, kNaN, kNaN, kNaN, kNaN}}};
  html = render_html(odd);
  CHECK(count(html, "<svg") == 4);
  check_no_nonfinite_attributes(html);
  CHECK(valid_json(render_json(odd)));
}

TEST_CASE("drill report: JSON keeps UTF-8 names and replaces invalid bytes") {
  Report r;
  r.scenario = "Ünïcødé 日本語 💥";
  r.description = std::string("bad \xff\xc3 end \xed\xa0\x80 \xc0\xaf \x01");
  r.phases = {{"фаза", 0, 1}};
  std::string json = render_json(r);
  REQUIRE(valid_json(json));
  CHECK(json.find("\"scenario\":\"Ünïcødé 日本語 💥\"") != std::string::npos);
  CHECK(json.find("\"name\":\"фаза\"") != std::string::npos);
  // A lone byte, a truncated sequence, a surrogate and an overlong form: U+FFFD for each byte.
  CHECK(json.find("\"description\":\"bad \\ufffd\\ufffd end \\ufffd\\ufffd\\ufffd "
                  "\\ufffd\\ufffd \\u0001\"") != std::string::npos);
}

TEST_CASE("drill report: JSON summary") {
  Report r = synthetic_report();
  r.reasons.push_back({"weird \"reason\"\n\x01", 1});
  std::string json = render_json(r);
  REQUIRE(valid_json(json));
  CHECK(json.find("\"scenario\":\"spike <script>alert(1)</script>\"") != std::string::npos);
  CHECK(json.find("\"target\":\"http://127.0.0.1:8080/api?a=1&b=\\\"2\\\"\"") != std::string::npos);
  CHECK(json.find("\"passed\":false") != std::string::npos);
  CHECK(json.find("\"duration_s\":30,") != std::string::npos);
  CHECK(json.find("\"achieved_rate\":290.5,") != std::string::npos);
  CHECK(json.find("\"max_start_lag_us\":1840,") != std::string::npos);
  CHECK(json.find("\"scraped\":true,\"scrape_errors\":2") != std::string::npos);
  // NaN became null; integral values have no fraction.
  CHECK(json.find("\"p50_ms\":[4,4,4,4,4,null,null,4,4,4,9,") != std::string::npos);
  CHECK(json.find("\"measured\":null") != std::string::npos);
  CHECK(json.find("\"success_ratio\":null") != std::string::npos);
  CHECK(json.find("\"offered\":[150,150,") != std::string::npos);
  CHECK(json.find("nan") == std::string::npos);
  CHECK(json.find("inf") == std::string::npos);
  // Outcomes keyed by name, every one of them, in the series and in each priority's counts.
  for (int k = 0; k < kOutcomes; ++k) {
    std::string key = std::string("\"") + outcome_name(static_cast<Outcome>(k)) + "\":";
    CHECK(count(json, key) == 1 + r.priorities.size());
  }
  CHECK(json.find("\"outcomes\":{\"ok\":[150,") != std::string::npos);
  CHECK(json.find("\"counts\":{\"ok\":2996,\"shed\":0,\"rate-limited\":0,") != std::string::npos);
  CHECK(json.find("\"sent\":3000") != std::string::npos);
  CHECK(json.find("\"latency\":{\"p50\":4,\"p90\":8,\"p99\":40,\"p999\":200,\"max\":900}") !=
        std::string::npos);
  CHECK(json.find("\"statuses\":{\"200\":8560,\"503\":440}") != std::string::npos);
  CHECK(json.find("\"weird \\\"reason\\\"\\n\\u0001\":1") != std::string::npos);
  CHECK(json.find("{\"text\":\"success ratio of critical >= 0.99\",\"measured\":0.9987,"
                  "\"passed\":true,\"detail\":\"2,996 of 3,000 requests\"}") != std::string::npos);
  CHECK(json.find("\"faults\":[{\"name\":\"backend 503 & slow\",\"from_s\":14,\"to_s\":18}]") !=
        std::string::npos);
  CHECK(json.find("{\"title\":\"Breakers open\",\"unit\":\"endpoints\",\"series\":[{\"name\":"
                  "\"open (app)\",\"values\":[0,") != std::string::npos);
  CHECK(json.find("\"values\":[null,null,null,40,") != std::string::npos);
}

TEST_CASE("drill report: outcome names") {
  CHECK(std::string(outcome_name(Outcome::ok)) == "ok");
  CHECK(std::string(outcome_name(Outcome::rate_limited)) == "rate-limited");
  CHECK(std::string(outcome_name(Outcome::circuit_open)) == "circuit-open");
  CHECK(std::string(outcome_name(Outcome::upstream_5xx)) == "upstream-5xx");
  CHECK(std::string(outcome_name(Outcome::conn_error)) == "conn-error");
  CHECK(std::string(outcome_name(Outcome::overflow)) == "overflow");
}

TEST_CASE("drill report: chart axes have 4 to 6 nice ticks") {
  for (double max : {1.0, 3.0, 7.0, 10.0, 13.0, 99.0, 800.0, 1234.0, 0.037, 1e6}) {
    for (bool integer : {false, true}) {
      Axis a = linear_axis(0, max, 6, integer);
      INFO("max " << max << " integer " << integer);
      CHECK(a.ticks.size() >= 4);
      CHECK(a.ticks.size() <= 6);
      CHECK(a.ticks.front() == 0);
      CHECK(a.hi >= max);
      CHECK(a.ticks.back() == doctest::Approx(a.hi));
      if (integer) CHECK(a.step == std::floor(a.step));
    }
  }
  Axis neg = linear_axis(-3, 7);
  CHECK(neg.lo <= -3);
  CHECK(neg.hi >= 7);
  Axis bad = linear_axis(kNaN, kNaN);
  CHECK(bad.lo == 0);
  CHECK(bad.hi == 1);

  for (auto [lo, hi] : {std::pair{3.7, 1525.0}, {0.5, 40.0}, {15.0, 600.0}, {1.0, 1e9}}) {
    Axis a = log_axis(lo, hi);
    INFO("log " << lo << ".." << hi);
    CHECK(a.log);
    CHECK(a.ticks.size() >= 4);
    CHECK(a.ticks.size() <= 6);
    CHECK(a.lo <= lo);
    CHECK(a.hi >= hi);
  }
  Axis a = linear_axis(0, 12000);
  CHECK(tick_label(5000, a) == "5k");
  CHECK(tick_label(0, a) == "0");
  Axis b = linear_axis(0, 1500);
  CHECK(tick_label(1500, b) == "1,500");
  Axis c = linear_axis(0, 10, 6, false);
  CHECK(tick_label(2, c) == "2");
  Axis d = linear_axis(0, 1);
  CHECK(tick_label(0.2, d) == "0.2");
  CHECK(escaped("<a href='x'>&\"") == "&lt;a href=&#39;x&#39;&gt;&amp;&quot;");
}

}  // namespace bulwark::drill
