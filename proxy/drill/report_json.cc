// The drill's JSON summary: every field of the Report, per-second series as arrays (NaN as
// null), outcome counts keyed by outcome name. Always valid JSON, whatever the strings hold.
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <string>
#include <string_view>

#include "core/json.h"
#include "drill/model.h"

namespace bulwark::drill {

std::string group_thousands(const std::string& digits) {
  // Built forward rather than with insert(): GCC 12 at -O3 warns (-Wrestrict) about the latter.
  std::string out;
  out.reserve(digits.size() + digits.size() / 3);
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

const char* outcome_name(Outcome o) {
  switch (o) {
    case Outcome::ok:
      return "ok";
    case Outcome::shed:
      return "shed";
    case Outcome::rate_limited:
      return "rate-limited";
    case Outcome::circuit_open:
      return "circuit-open";
    case Outcome::local_error:
      return "local-error";
    case Outcome::upstream_4xx:
      return "upstream-4xx";
    case Outcome::upstream_5xx:
      return "upstream-5xx";
    case Outcome::timeout:
      return "timeout";
    case Outcome::conn_error:
      return "conn-error";
    case Outcome::overflow:
      return "overflow";
  }
  return "unknown";
}

namespace {

// The length of the well-formed UTF-8 sequence at s[i] (2 to 4 bytes), 0 if there is none.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = at(i);
  std::size_t n = c >= 0xc2 && c <= 0xdf   ? 2
                  : c >= 0xe0 && c <= 0xef ? 3
                  : c >= 0xf0 && c <= 0xf4 ? 4
                                           : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k)
    if ((at(i + k) & 0xc0) != 0x80) return 0;
  unsigned char c1 = at(i + 1);
  if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) ||
      (c == 0xf4 && c1 > 0x8f))
    return 0;  // overlong, a surrogate, or past U+10FFFF
  return n;
}

// A JSON string: UTF-8 text (names in any script) as it is, control bytes escaped, and a byte
// that is not part of well-formed UTF-8 as U+FFFD. (append_json_string escapes every byte
// >= 0x7f on its own: the two bytes of an accented letter became two Latin-1 letters.)
void append_string(std::string& out, std::string_view s) {
  std::string quoted;
  out.push_back('"');
  for (std::size_t i = 0; i < s.size();) {
    std::size_t ascii = i;
    while (ascii < s.size() && static_cast<unsigned char>(s[ascii]) < 0x80) ++ascii;
    if (ascii > i) {  // escaped as everywhere else in Bulwark
      quoted.clear();
      append_json_string(quoted, s.substr(i, ascii - i));
      out.append(quoted, 1, quoted.size() - 2);
      i = ascii;
    } else if (std::size_t n = utf8_sequence(s, i)) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out.append("\\ufffd");
      ++i;
    }
  }
  out.push_back('"');
}

class JsonWriter {
 public:
  std::string out;

  // Separators are written by the caller's structure: key() and value writers add the comma
  // when the enclosing object or array already has a member.
  void open(char c) {
    comma();
    out.push_back(c);
    first_ = true;
  }
  void close(char c) {
    out.push_back(c);
    first_ = false;
  }
  void key(std::string_view k) {
    comma();
    append_string(out, k);
    out.push_back(':');
    first_ = true;  // the value follows without a comma
  }
  void string(std::string_view s) {
    comma();
    append_string(out, s);
  }
  void boolean(bool b) {
    comma();
    out.append(b ? "true" : "false");
  }
  void uint(std::uint64_t v) {
    comma();
    char buf[32];
    std::snprintf(buf, sizeof buf, "%" PRIu64, v);
    out.append(buf);
  }
  void integer(std::int64_t v) {
    comma();
    char buf[32];
    std::snprintf(buf, sizeof buf, "%" PRId64, v);
    out.append(buf);
  }
  // NaN and infinities as null; integral values without a fraction; others to 6
  // significant digits (%g never writes a form JSON does not allow, for finite values).
  void number(double v) {
    comma();
    if (!std::isfinite(v)) {
      out.append("null");
      return;
    }
    char buf[48];
    if (v == std::floor(v) && std::fabs(v) < 9.0e15) {
      std::snprintf(buf, sizeof buf, "%.0f", v);
      if (std::string_view(buf) == "-0") buf[0] = '0', buf[1] = '\0';
    } else {
      std::snprintf(buf, sizeof buf, "%.6g", v);
    }
    out.append(buf);
  }
  void numbers(const std::vector<double>& values) {
    open('[');
    for (double v : values) number(v);
    close(']');
  }
  void field(std::string_view k, std::string_view v) { key(k), string(v); }
  void field(std::string_view k, double v) { key(k), number(v); }

 private:
  void comma() {
    if (!first_) out.push_back(',');
    first_ = false;
  }
  bool first_ = true;
};

void write_span(JsonWriter& w, const Span& s) {
  w.open('{');
  w.field("name", s.name);
  w.field("from_s", s.from_s);
  w.field("to_s", s.to_s);
  w.close('}');
}

void write_counts(JsonWriter& w, const std::vector<std::pair<std::string, std::uint64_t>>& v) {
  w.open('{');
  for (const auto& [name, count] : v) {
    w.key(name);
    w.uint(count);
  }
  w.close('}');
}

}  // namespace

std::string render_json(const Report& r) {
  JsonWriter w;
  w.out.reserve(4096 + r.offered.size() * 100);
  w.open('{');
  w.field("scenario", r.scenario);
  w.field("description", r.description);
  w.field("file", r.file);
  w.field("target", r.target);
  w.field("started_at", r.started_at);
  w.key("passed");
  w.boolean(r.passed);
  w.field("duration_s", r.duration_s);
  w.field("offered_rate_avg", r.offered_rate_avg);
  w.field("achieved_rate", r.achieved_rate);
  w.key("max_start_lag_us");
  w.integer(r.max_start_lag_us);
  w.key("scraped");
  w.boolean(r.scraped);
  w.key("scrape_errors");
  w.uint(r.scrape_errors);

  w.key("objectives");
  w.open('[');
  for (const auto& o : r.objectives) {
    w.open('{');
    w.field("text", o.text);
    w.field("measured", o.measured);
    w.key("passed");
    w.boolean(o.passed);
    w.field("detail", o.detail);
    w.close('}');
  }
  w.close(']');

  w.key("priorities");
  w.open('[');
  for (const auto& p : r.priorities) {
    w.open('{');
    w.field("name", p.name);
    w.key("sent");
    w.uint(p.sent);
    w.key("counts");
    w.open('{');
    for (int k = 0; k < kOutcomes; ++k) {
      w.key(outcome_name(static_cast<Outcome>(k)));
      w.uint(p.counts[k]);
    }
    w.close('}');
    w.field("success_ratio", p.success_ratio);
    w.key("latency");  // milliseconds, of the ok responses
    w.open('{');
    w.field("p50", p.latency.p50);
    w.field("p90", p.latency.p90);
    w.field("p99", p.latency.p99);
    w.field("p999", p.latency.p999);
    w.field("max", p.latency.max);
    w.close('}');
    w.close('}');
  }
  w.close(']');
  w.key("statuses");
  write_counts(w, r.statuses);
  w.key("reasons");
  write_counts(w, r.reasons);

  w.key("phases");
  w.open('[');
  for (const auto& s : r.phases) write_span(w, s);
  w.close(']');
  w.key("faults");
  w.open('[');
  for (const auto& s : r.faults) write_span(w, s);
  w.close(']');

  w.key("offered");
  w.numbers(r.offered);
  w.key("outcomes");
  w.open('{');
  for (int k = 0; k < kOutcomes; ++k) {
    w.key(outcome_name(static_cast<Outcome>(k)));
    w.numbers(r.outcomes[k]);
  }
  w.close('}');
  w.key("p50_ms");
  w.numbers(r.p50_ms);
  w.key("p99_ms");
  w.numbers(r.p99_ms);
  w.key("max_ms");
  w.numbers(r.max_ms);

  w.key("controls");
  w.open('[');
  for (const auto& c : r.controls) {
    w.open('{');
    w.field("title", c.title);
    w.field("unit", c.unit);
    w.key("series");
    w.open('[');
    for (const auto& s : c.series) {
      w.open('{');
      w.field("name", s.name);
      w.key("values");
      w.numbers(s.values);
      w.close('}');
    }
    w.close(']');
    w.close('}');
  }
  w.close(']');
  w.close('}');
  w.out.push_back('\n');
  return std::move(w.out);
}

}  // namespace bulwark::drill
