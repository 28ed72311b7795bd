// The config loader (config/loader.h, load_config_string) on arbitrary text. Invariants:
// exactly one of a config or errors; every error is "FILE:LINE:COL: ..." with FILE the name
// given and LINE/COL positive numbers (0:0 for the whole file); loading is deterministic (the same text gives the same
// errors); a config that loads re-loads from the same text to the same listener/upstream set.
#include <cstdint>
#include <string>

#include "config/loader.h"
#include "core/log.h"
#include "fuzz_check.h"

using namespace bulwark;

namespace {

// A number without leading zeros; `zero` tells whether it is 0.
bool number(const std::string& s, std::size_t& i, bool& zero) {
  std::size_t start = i;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  zero = i - start == 1 && s[start] == '0';
  return i > start && (zero || s[start] != '0');
}

// "fuzz.yaml:LINE:COL: " then a message: LINE and COL both positive, or both 0 for an error
// about the whole file ("the file is empty", docs/operations.md).
bool well_formed(const std::string& e) {
  static const std::string prefix = "fuzz.yaml:";
  if (e.compare(0, prefix.size(), prefix) != 0) return false;
  std::size_t i = prefix.size();
  bool line_zero = false, col_zero = false;
  if (!number(e, i, line_zero) || i >= e.size() || e[i] != ':') return false;
  ++i;
  if (!number(e, i, col_zero) || line_zero != col_zero) return false;
  return e.compare(i, 2, ": ") == 0 && e.size() > i + 2;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  set_log_level(LogLevel::error);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 16384) return -1;
  std::string text(reinterpret_cast<const char*>(data), size);
  LoadResult r = load_config_string(text, "fuzz.yaml");
  FUZZ_CHECK(r.config.has_value() != !r.errors.empty(),
             "config %s with %zu errors", r.config ? "returned" : "absent", r.errors.size());
  for (const std::string& e : r.errors)
    FUZZ_CHECK(well_formed(e), "error not in FILE:LINE:COL form: %s", e.c_str());
  LoadResult again = load_config_string(text, "fuzz.yaml");
  FUZZ_CHECK(again.errors == r.errors, "errors differ between two loads of the same text");
  FUZZ_CHECK(again.config.has_value() == r.config.has_value(), "nondeterministic load");
  if (r.config) {
    FUZZ_CHECK(again.config->listeners.size() == r.config->listeners.size(), "listeners differ");
    FUZZ_CHECK(again.config->upstreams.size() == r.config->upstreams.size(), "upstreams differ");
  }
  return 0;
}
