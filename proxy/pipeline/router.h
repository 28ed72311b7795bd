// Chooses the route for a request: routes are tried in config order and the first whose
// path prefix, host, methods and headers all match wins.
#pragma once

#include <string_view>

#include "config/config.h"
#include "http/headers.h"

namespace bulwark {

class Router {
 public:
  explicit Router(const ListenerConfig& listener) : listener_(listener) {}
  // Index of the matching route, or -1. `host` is the Host header (port allowed).
  int match(std::string_view method, std::string_view path, std::string_view host,
            const HeaderBlock& headers) const;

 private:
  const ListenerConfig& listener_;
};

// Host pattern matching: "" matches anything, "*.example.com" any subdomain, else exact
// (case-insensitive).
bool host_matches(std::string_view pattern, std::string_view host);

}  // namespace bulwark
