#include "config/yaml_reader.h"

#include <charconv>
#include <set>

#include "config/values.h"

namespace bulwark {

void ConfigErrors::add(const YAML::Mark& mark, const std::string& path,
                       const std::string& message) {
  int line = mark.is_null() ? 0 : mark.line + 1;
  int column = mark.is_null() ? 0 : mark.column + 1;
  lines_.push_back(file_ + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " +
                   (path.empty() ? "(root)" : path) + ": " + message);
}

void ConfigErrors::record(const std::string& path, const YAML::Mark& mark) {
  if (path.empty() || mark.is_null()) return;
  marks_.emplace(path, SourceMark{mark.line + 1, mark.column + 1});
}

std::string join_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

YamlFields::YamlFields(ConfigErrors& errors, const YAML::Node& node, std::string path,
                       std::initializer_list<const char*> allowed)
    : errors_(errors), node_(node), path_(std::move(path)), mark_(node.Mark()) {
  if (!node.IsMap()) {
    if (node.IsNull())
      errors_.add(mark_, path_, "expected a mapping, found nothing");
    else
      errors_.add(mark_, path_, "expected a mapping");
    return;
  }
  is_map_ = true;
  errors_.record(path_, mark_);  // a list item; a mapping under a key has its key's mark
  std::set<std::string> seen;
  for (const auto& item : node) {
    const YAML::Node& key = item.first;
    if (!key.IsScalar()) {
      errors_.add(key.Mark(), path_, "keys must be plain strings");
      continue;
    }
    const std::string name = key.Scalar();
    bool known = false;
    for (const char* a : allowed) known = known || name == a;
    if (!known) {
      std::string list;
      for (const char* a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      errors_.add(key.Mark(), join_path(path_, name),
                  "unknown key (expected one of: " + list + ")");
    } else if (!seen.insert(name).second) {
      errors_.add(key.Mark(), join_path(path_, name), "duplicate key");
    } else {
      errors_.record(join_path(path_, name), key.Mark());
    }
  }
}

bool YamlFields::has(const char* key) const {
  if (!is_map_) return false;
  YAML::Node value = node_[key];
  return value.IsDefined();
}

YAML::Node YamlFields::node(const char* key) const {
  // Not a mapping (reported once, by the constructor): its fields are absent, not null nodes
  // without a position that every reader would report again as "file:0:0".
  if (!is_map_) return YAML::Node(YAML::NodeType::Undefined);
  return node_[key];
}

void YamlFields::error(const char* key, const std::string& message) const {
  YAML::Node value = node(key);
  errors_.add(value.IsDefined() ? value.Mark() : mark_, path(key), message);
}

bool YamlFields::required(const char* key) const {
  if (!is_map_) return false;
  if (has(key)) return true;
  errors_.add(mark_, path(key), "required key is missing");
  return false;
}

bool YamlFields::scalar(const char* key, std::string& out) const {
  YAML::Node value = node(key);
  if (!value.IsDefined()) return false;
  if (!value.IsScalar()) {
    error(key, "expected a single value");
    return false;
  }
  out = value.Scalar();
  return true;
}

void YamlFields::string(const char* key, std::string& out) const {
  std::string text;
  if (!scalar(key, text)) return;
  if (text.empty()) {
    error(key, "must not be empty");
    return;
  }
  out = text;
}

void YamlFields::boolean(const char* key, bool& out) const {
  std::string text;
  if (!scalar(key, text)) return;
  if (text == "true")
    out = true;
  else if (text == "false")
    out = false;
  else
    error(key, "expected true or false, found '" + text + "'");
}

void YamlFields::count(const char* key, std::uint64_t& out, std::uint64_t min,
                       std::uint64_t max) const {
  std::string text;
  if (!scalar(key, text)) return;
  std::uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
    error(key, "expected a whole number, found '" + text + "'");
    return;
  }
  if (value < min || value > max) {
    error(key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    return;
  }
  out = value;
}

void YamlFields::integer(const char* key, int& out, long long min, long long max) const {
  std::uint64_t value = static_cast<std::uint64_t>(out);
  std::uint64_t before = value;
  count(key, value, static_cast<std::uint64_t>(min), static_cast<std::uint64_t>(max));
  if (value != before) out = static_cast<int>(value);
}

void YamlFields::duration(const char* key, std::uint64_t& out_ms, bool allow_zero) const {
  std::string text, message;
  if (!scalar(key, text)) return;
  auto value = parse_duration(text, message);
  if (!value) return error(key, message);
  if (!allow_zero && *value == 0) return error(key, "must be greater than zero");
  out_ms = *value;
}

void YamlFields::size(const char* key, std::uint64_t& out) const {
  std::string text, message;
  if (!scalar(key, text)) return;
  auto value = parse_size(text, message);
  if (!value) return error(key, message);
  out = *value;
}

void YamlFields::ratio(const char* key, double& out) const {
  std::string text, message;
  if (!scalar(key, text)) return;
  auto value = parse_ratio(text, message);
  if (!value) return error(key, message);
  out = *value;
}

void YamlFields::rate(const char* key, double& out) const {
  std::string text, message;
  if (!scalar(key, text)) return;
  auto value = parse_rate(text, message);
  if (!value) return error(key, message);
  out = *value;
}

void YamlFields::string_list(const char* key, std::vector<std::string>& out) const {
  YAML::Node value = node(key);
  if (!value.IsDefined()) return;
  if (!value.IsSequence()) return error(key, "expected a list");
  std::vector<std::string> items;
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (!value[i].IsScalar() || value[i].Scalar().empty()) {
      errors_.add(value[i].Mark(), path(key) + "[" + std::to_string(i) + "]",
                  "expected a non-empty string");
      continue;
    }
    items.push_back(value[i].Scalar());
  }
  out = std::move(items);
}

}  // namespace bulwark
