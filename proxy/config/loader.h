// Reads and validates the YAML config. All problems are reported together, each as
// "FILE:LINE:COL: key.path: message"; a config is returned only when there are none.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace bulwark {

struct LoadResult {
  std::optional<Config> config;
  std::vector<std::string> errors;
};

// Reads a config file's bytes (a regular file of at most 4 MiB; the open never blocks, so a
// FIFO is refused rather than waited on). False with `error` (no "FILE:" prefix) otherwise,
// and `error_number` (when given) set to the errno behind it, or 0 when it is not a system
// error (too large, not a regular file).
bool read_config_file(const std::string& path, std::string& text, std::string& error,
                      int* error_number = nullptr);
// `text_read`: set to the file's bytes when it could be read.
LoadResult load_config_file(const std::string& path, std::string* text_read = nullptr);
// `name` is used as FILE in messages.
LoadResult load_config_string(const std::string& text, const std::string& name);

}  // namespace bulwark
