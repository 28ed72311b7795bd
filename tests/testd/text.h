// Small text helpers of the test backend.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace testd {

inline std::string hex(std::uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

inline std::string json_escape(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\')
      o.push_back('\\'), o.push_back(static_cast<char>(c));
    else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else
      o.push_back(static_cast<char>(c));
  }
  return o;
}

}  // namespace testd
