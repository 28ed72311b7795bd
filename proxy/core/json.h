// Minimal JSON output helpers: quoting with escapes, for logs, replies and /config.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace bulwark {

// Appends `text` as a quoted JSON string; control bytes and invalid UTF-8 lead bytes
// are escaped so a client-supplied path can never break a log line.
inline void append_json_string(std::string& out, std::string_view text) {
  out.push_back('"');
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out.append("\\\"");
        break;
      case '\\':
        out.append("\\\\");
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out.append(buf);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

}  // namespace bulwark
