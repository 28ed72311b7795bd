// Shared helpers for unit tests.
#pragma once

#include <cstring>
#include <initializer_list>
#include <utility>

#include "http/headers.h"

namespace bulwark::test {

// A HeaderBlock holding the given (name, value) fields in order.
inline HeaderBlock header_block(std::initializer_list<std::pair<const char*, const char*>> fields) {
  HeaderBlock h;
  for (auto [n, v] : fields) {
    h.append_name(n, std::strlen(n));
    h.append_value(v, std::strlen(v));
  }
  return h;
}

}  // namespace bulwark::test
