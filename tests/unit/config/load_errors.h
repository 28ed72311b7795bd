// A LoadResult's errors as one text, one per line: what a failed REQUIRE shows.
#pragma once

#include <string>

#include "config/loader.h"

namespace bulwark::test {

inline std::string errors_text(const LoadResult& r) {
  std::string out;
  for (const auto& e : r.errors) out += e + "\n";
  return out;
}

}  // namespace bulwark::test
