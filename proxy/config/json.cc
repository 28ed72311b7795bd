#include "config/json.h"

#include <cstdio>

#include "core/json.h"

namespace bulwark {
namespace {

class JsonObject {
 public:
  explicit JsonObject(std::string& out) : out_(out) { out_.push_back('{'); }
  ~JsonObject() { out_.push_back('}'); }
  std::string& key(const char* name) {
    if (!first_) out_.push_back(',');
    first_ = false;
    append_json_string(out_, name);
    out_.push_back(':');
    return out_;
  }
  void str(const char* name, const std::string& v) { append_json_string(key(name), v); }
  void num(const char* name, double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.15g", v);
    key(name).append(buf);
  }
  void boolean(const char* name, bool v) { key(name).append(v ? "true" : "false"); }
  // Durations are shown as strings in the config's own notation.
  void ms(const char* name, std::uint64_t v) { str(name, std::to_string(v) + "ms"); }
  void ratio(const char* name, double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g%%", v * 100);
    str(name, buf);
  }

 private:
  std::string& out_;
  bool first_ = true;
};

void string_array(std::string& out, const std::vector<std::string>& items) {
  out.push_back('[');
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out.push_back(',');
    append_json_string(out, items[i]);
  }
  out.push_back(']');
}

void route_json(std::string& out, const RouteConfig& r) {
  JsonObject o(out);
  o.str("name", r.name);
  {
    JsonObject m(o.key("match"));
    m.str("prefix", r.match.prefix);
    if (!r.match.host.empty()) m.str("host", r.match.host);
    if (!r.match.methods.empty()) string_array(m.key("methods"), r.match.methods);
    if (!r.match.headers.empty()) {
      JsonObject h(m.key("headers"));
      for (const auto& [name, value] : r.match.headers) h.str(name.c_str(), value);
    }
  }
  o.str("upstream", r.upstream);
  o.ms("timeout", r.timeout_ms);
}

}  // namespace

std::string config_to_json(const Config& c) {
  std::string out;
  {
    JsonObject root(out);
    {
      JsonObject a(root.key("admin"));
      a.str("listen", c.admin_listen);
      a.num("max_connections", static_cast<double>(c.admin_max_connections));
      JsonObject t(a.key("timeouts"));
      t.ms("header", c.admin_header_timeout_ms);
      t.ms("idle", c.admin_idle_timeout_ms);
    }
    root.num("workers", c.workers);
    {
      JsonObject d(root.key("drain"));
      d.ms("delay", c.drain_delay_ms);
      d.ms("timeout", c.drain_timeout_ms);
    }
    {
      JsonObject a(root.key("access_log"));
      a.str("path", c.access_log_path);
      a.str("format", c.access_log_format);
    }
    if (c.redis_address) {
      JsonObject r(root.key("redis"));
      r.str("address", *c.redis_address);
      r.ms("timeout", c.redis_timeout_ms);
    }
    std::string& ls = root.key("listeners");
    ls.push_back('[');
    for (std::size_t i = 0; i < c.listeners.size(); ++i) {
      const auto& l = c.listeners[i];
      if (i) ls.push_back(',');
      JsonObject o(ls);
      o.str("name", l.name);
      o.str("listen", l.address.to_string());
      {
        JsonObject t(o.key("timeouts"));
        t.ms("header", l.header_timeout_ms);
        t.ms("idle", l.idle_timeout_ms);
        t.ms("body_idle", l.body_idle_timeout_ms);
      }
      {
        JsonObject t(o.key("limits"));
        t.num("max_connections", static_cast<double>(l.max_connections));
        t.num("max_header_bytes", static_cast<double>(l.max_header_bytes));
        t.num("max_headers", static_cast<double>(l.max_headers));
        t.num("max_body_bytes", static_cast<double>(l.max_body_bytes));
      }
      std::string& rs = o.key("routes");
      rs.push_back('[');
      for (std::size_t r = 0; r < l.routes.size(); ++r) {
        if (r) rs.push_back(',');
        route_json(rs, l.routes[r]);
      }
      rs.push_back(']');
    }
    ls.push_back(']');
    std::string& us = root.key("upstreams");
    us.push_back('[');
    for (std::size_t i = 0; i < c.upstreams.size(); ++i) {
      const auto& u = c.upstreams[i];
      if (i) us.push_back(',');
      JsonObject o(us);
      o.str("name", u.name);
      std::vector<std::string> eps;
      for (const auto& e : u.endpoints) eps.push_back(e.is_ip() ? e.address.to_string() : e.spec);
      string_array(o.key("endpoints"), eps);
      o.ms("dns_refresh", u.dns_refresh_ms);
      o.str("balance", u.balance);
      o.ms("connect_timeout", u.connect_timeout_ms);
      o.num("max_response_header_bytes", static_cast<double>(u.max_response_header_bytes));
      {
        JsonObject p(o.key("pool"));
        p.num("max_connections", static_cast<double>(u.pool.max_connections));
        p.num("max_idle", static_cast<double>(u.pool.max_idle));
        p.ms("idle_timeout", u.pool.idle_timeout_ms);
      }
    }
    us.push_back(']');
  }
  return out;
}

}  // namespace bulwark
