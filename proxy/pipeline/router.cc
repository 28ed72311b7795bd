#include "pipeline/router.h"

namespace bulwark {

bool host_matches(std::string_view pattern, std::string_view host) {
  if (pattern.empty()) return true;
  host = host_without_port(host);
  if (pattern.size() > 2 && pattern[0] == '*' && pattern[1] == '.') {
    std::string_view suffix = pattern.substr(1);  // ".example.com"
    return host.size() > suffix.size() && iequals(host.substr(host.size() - suffix.size()), suffix);
  }
  return iequals(pattern, host);
}

int Router::match(std::string_view method, std::string_view path, std::string_view host,
                  const HeaderBlock& headers) const {
  for (std::size_t i = 0; i < listener_.routes.size(); ++i) {
    const RouteMatch& m = listener_.routes[i].match;
    if (path.substr(0, m.prefix.size()) != m.prefix) continue;
    if (!host_matches(m.host, host)) continue;
    if (!m.methods.empty()) {
      bool any = false;
      for (const auto& allowed : m.methods) any = any || allowed == method;
      if (!any) continue;
    }
    bool headers_ok = true;
    for (const auto& [name, value] : m.headers) {
      bool found = false;
      for (std::size_t h = 0; h < headers.size() && !found; ++h)
        found = iequals(headers.name(h), name) && headers.value(h) == value;
      if (!found) {
        headers_ok = false;
        break;
      }
    }
    if (headers_ok) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace bulwark
