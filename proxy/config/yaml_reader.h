// Typed, error-collecting access to one YAML mapping. Every problem is recorded as
// "FILE:LINE:COL: key.path: message" and reading goes on, so a user sees all errors at once.
// The position of every key read is kept too (ConfigErrors::marks), for warnings
// (config/lint.h) that point at a key of a valid file.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "config/config.h"

namespace bulwark {

class ConfigErrors {
 public:
  explicit ConfigErrors(std::string file) : file_(std::move(file)) {}
  void add(const YAML::Mark& mark, const std::string& path, const std::string& message);
  const std::vector<std::string>& lines() const { return lines_; }
  bool empty() const { return lines_.empty(); }
  const std::string& file() const { return file_; }
  // Records where the key at `path` was written; the first record of a path wins.
  void record(const std::string& path, const YAML::Mark& mark);
  // Key path ("listeners[0].routes[1].retry.attempts") -> position of the key; for a list
  // item ("listeners[0].routes[1]"), of the item.
  std::map<std::string, SourceMark>& marks() { return marks_; }

 private:
  std::string file_;
  std::vector<std::string> lines_;
  std::map<std::string, SourceMark> marks_;
};

// Joins a parent path and a key: ("listeners[0]", "name") -> "listeners[0].name".
std::string join_path(const std::string& parent, const std::string& key);

class YamlFields {
 public:
  // Checks that `node` is a mapping whose keys are all in `allowed` and unique.
  YamlFields(ConfigErrors& errors, const YAML::Node& node, std::string path,
             std::initializer_list<const char*> allowed);

  bool ok() const { return is_map_; }
  bool has(const char* key) const;
  YAML::Node node(const char* key) const;
  std::string path(const char* key) const { return join_path(path_, key); }
  const std::string& path() const { return path_; }
  const YAML::Mark& mark() const { return mark_; }
  ConfigErrors& errors() const { return errors_; }

  // Each reader leaves `out` unchanged when the key is absent or invalid.
  // required() records "missing" when absent and returns false.
  bool required(const char* key) const;
  void string(const char* key, std::string& out) const;
  void boolean(const char* key, bool& out) const;
  void integer(const char* key, int& out, long long min, long long max) const;
  void count(const char* key, std::uint64_t& out, std::uint64_t min, std::uint64_t max) const;
  void duration(const char* key, std::uint64_t& out_ms, bool allow_zero = true) const;
  void size(const char* key, std::uint64_t& out) const;
  void ratio(const char* key, double& out) const;
  void rate(const char* key, double& out) const;
  void string_list(const char* key, std::vector<std::string>& out) const;
  // The scalar text of a key, or false (with an error) when it is not a scalar.
  bool scalar(const char* key, std::string& out) const;
  void error(const char* key, const std::string& message) const;

 private:
  ConfigErrors& errors_;
  YAML::Node node_;
  std::string path_;
  YAML::Mark mark_;
  bool is_map_ = false;
};

}  // namespace bulwark
