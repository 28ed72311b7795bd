#include "drill/metrics.h"

#include <cmath>
#include <cstdlib>
#include <limits>

namespace bulwark::drill {
namespace {

bool name_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

// Parses `{a="x",b="y"}` starting at text[i] == '{'; i ends after '}'.
bool parse_labels(std::string_view text, std::size_t& i, std::map<std::string, std::string>& out) {
  ++i;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == ',')) ++i;
    if (i < text.size() && text[i] == '}') {
      ++i;
      return true;
    }
    std::size_t start = i;
    while (i < text.size() && name_char(text[i], i == start)) ++i;
    if (i == start || i + 1 >= text.size() || text[i] != '=' || text[i + 1] != '"') return false;
    std::string key(text.substr(start, i - start));
    i += 2;
    std::string value;
    while (i < text.size() && text[i] != '"') {
      if (text[i] == '\\' && i + 1 < text.size()) {
        ++i;
        value += text[i] == 'n' ? '\n' : text[i];
      } else {
        value += text[i];
      }
      ++i;
    }
    if (i >= text.size()) return false;
    ++i;  // closing quote
    out.emplace(std::move(key), std::move(value));
  }
  return false;
}

}  // namespace

std::vector<Sample> parse_prometheus(std::string_view text,
                                     const std::set<std::string, std::less<>>* wanted) {
  std::vector<Sample> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') continue;
    Sample s;
    std::size_t i = 0;
    while (i < line.size() && name_char(line[i], i == 0)) ++i;
    if (i == 0 || (wanted && wanted->find(line.substr(0, i)) == wanted->end())) continue;
    s.name = std::string(line.substr(0, i));
    if (i < line.size() && line[i] == '{' && !parse_labels(line, i, s.labels)) continue;
    while (i < line.size() && line[i] == ' ') ++i;
    std::string number(line.substr(i, line.find(' ', i) - i));
    if (number == "+Inf") s.value = std::numeric_limits<double>::infinity();
    else if (number == "-Inf") s.value = -std::numeric_limits<double>::infinity();
    else if (number == "NaN") s.value = std::nan("");
    else {
      char* stop = nullptr;
      s.value = std::strtod(number.c_str(), &stop);
      if (number.empty() || *stop != '\0') continue;
    }
    out.push_back(std::move(s));
  }
  return out;
}

double evaluate(const ControlSeries& series, const std::vector<Sample>& samples) {
  double result = std::nan("");
  for (const Sample& s : samples) {
    if (s.name != series.metric || !std::isfinite(s.value)) continue;
    bool match = true;
    for (const auto& [key, value] : series.labels) {
      auto it = s.labels.find(key);
      if (it == s.labels.end() || it->second != value) {
        match = false;
        break;
      }
    }
    if (!match) continue;
    if (std::isnan(result)) result = s.value;
    else if (series.agg == ControlSeries::Agg::sum) result += s.value;
    else if (series.agg == ControlSeries::Agg::max) result = std::max(result, s.value);
    else result = std::min(result, s.value);
  }
  return result;
}

}  // namespace bulwark::drill
