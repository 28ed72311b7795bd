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
  if (const auto& rl = r.rate_limit) {
    JsonObject b(o.key("rate_limit"));
    char rate[32];
    std::snprintf(rate, sizeof rate, "%.15g/s", rl->rate_per_second);
    b.str("rate", rate);
    b.num("burst", rl->burst);
    b.str("key", rl->key);
    b.str("scope", rl->scope);
    b.str("on_redis_failure", rl->on_redis_failure);
    b.boolean("enforce", rl->enforce);
  }
  if (const auto& rt = r.retry) {
    JsonObject b(o.key("retry"));
    b.num("attempts", rt->attempts);
    string_array(b.key("on"), rt->on);
    if (rt->per_try_timeout_ms) b.ms("per_try_timeout", rt->per_try_timeout_ms);
    {
      JsonObject k(b.key("backoff"));
      k.ms("base", rt->backoff_base_ms);
      k.ms("max", rt->backoff_max_ms);
    }
    {
      JsonObject k(b.key("budget"));
      k.ratio("ratio", rt->budget_ratio);
      k.num("min_per_second", rt->budget_min_per_second);
    }
    b.str("methods", rt->methods);
    b.num("max_body_bytes", static_cast<double>(rt->max_body_bytes));
  }
  if (const auto& f = r.fault) {
    JsonObject b(o.key("fault"));
    if (f->delay_ratio > 0) {
      JsonObject k(b.key("delay"));
      k.ratio("percent", f->delay_ratio);
      k.ms("duration", f->delay_ms);
    }
    if (f->abort_ratio > 0) {
      JsonObject k(b.key("abort"));
      k.ratio("percent", f->abort_ratio);
      k.num("status", f->abort_status);
    }
    b.boolean("allow_header", f->allow_header);
  }
}

void circuit_breaker_json(std::string& out, const CircuitBreakerConfig& c) {
  JsonObject b(out);
  b.num("consecutive_failures", c.consecutive_failures);
  b.ratio("failure_rate", c.failure_rate);
  b.ms("window", c.window_ms);
  b.num("min_requests", c.min_requests);
  if (c.slow_call_ms) {
    JsonObject k(b.key("slow_call"));
    k.ms("duration", c.slow_call_ms);
    k.ratio("rate", c.slow_call_rate);
  }
  b.ms("open_for", c.open_for_ms);
  b.ms("max_open_for", c.max_open_for_ms);
  b.num("half_open_requests", c.half_open_requests);
  b.ratio("max_ejected", c.max_ejected);
  b.boolean("half_open_on_health_check", c.half_open_on_health_check);
  std::vector<std::string> on;
  if (c.on_connect_failure) on.push_back("connect-failure");
  if (c.on_reset) on.push_back("reset");
  if (c.on_timeout) on.push_back("timeout");
  if (c.on_5xx) on.push_back("5xx");
  for (int s : c.on_status) on.push_back(std::to_string(s));
  string_array(b.key("failure_on"), on);
}

void health_check_json(std::string& out, const HealthCheckConfig& h) {
  JsonObject b(out);
  b.str("type", h.type);
  if (h.type == "http") b.str("path", h.path);
  b.ms("interval", h.interval_ms);
  b.ms("timeout", h.timeout_ms);
  b.ratio("jitter", h.jitter);
  b.num("healthy_threshold", h.healthy_threshold);
  b.num("unhealthy_threshold", h.unhealthy_threshold);
  std::vector<std::string> ranges;
  for (const auto& r : h.expected_status)
    ranges.push_back(r.low == r.high ? std::to_string(r.low)
                                     : std::to_string(r.low) + "-" + std::to_string(r.high));
  string_array(b.key("expected_status"), ranges);
}

void load_shedding_json(std::string& out, const LoadSheddingConfig& s) {
  JsonObject b(out);
  b.str("algorithm", s.algorithm);
  b.num("initial_limit", s.initial_limit);
  b.num("min_limit", s.min_limit);
  b.num("max_limit", s.max_limit);
  {
    JsonObject q(b.key("queue"));
    q.num("size", static_cast<double>(s.queue_size));
    q.ms("timeout", s.queue_timeout_ms);
  }
  b.str("priority_header", s.priority_header);
  b.ratio("critical_reserve", s.critical_reserve);
  b.boolean("enforce", s.enforce);
}

void upstream_json(std::string& out, const UpstreamConfig& u) {
  JsonObject o(out);
  o.str("name", u.name);
  std::vector<std::string> eps;
  for (const auto& e : u.endpoints) eps.push_back(e.is_ip() ? e.address.to_string() : e.spec);
  string_array(o.key("endpoints"), eps);
  o.ms("dns_refresh", u.dns_refresh_ms);
  o.str("balance", u.balance);
  o.ms("connect_timeout", u.connect_timeout_ms);
  o.num("max_response_header_bytes", static_cast<double>(u.max_response_header_bytes));
  o.str("protocol", u.h2 ? "h2" : "http1");
  if (u.h2) {
    JsonObject h(o.key("http2"));
    h.num("max_concurrent_streams", static_cast<double>(u.h2_max_concurrent_streams));
    h.num("initial_window", static_cast<double>(u.h2_initial_window));
    h.ms("ping_interval", u.h2_ping_interval_ms);
    h.ms("ping_timeout", u.h2_ping_timeout_ms);
  }
  {
    JsonObject p(o.key("pool"));
    p.num("max_connections", static_cast<double>(u.pool.max_connections));
    p.num("max_idle", static_cast<double>(u.pool.max_idle));
    p.ms("idle_timeout", u.pool.idle_timeout_ms);
  }
  {
    JsonObject l(o.key("limits"));
    l.num("max_requests", static_cast<double>(u.limits.max_requests));
    l.num("max_pending", static_cast<double>(u.limits.max_pending));
    l.ms("pending_timeout", u.limits.pending_timeout_ms);
  }
  if (u.circuit_breaker) circuit_breaker_json(o.key("circuit_breaker"), *u.circuit_breaker);
  if (u.health_check) health_check_json(o.key("health_check"), *u.health_check);
  if (u.load_shedding) load_shedding_json(o.key("load_shedding"), *u.load_shedding);
  if (u.tls) {
    JsonObject t(o.key("tls"));
    if (!u.tls->sni.empty()) t.str("sni", u.tls->sni);
    t.str("ca", u.tls->ca);
    t.boolean("verify", u.tls->verify);
    if (!u.tls->cert.empty()) {
      t.str("cert", u.tls->cert);
      t.str("key", u.tls->key);
    }
  }
}

// The blocks a reload cannot change (see restart_json).
void restart_blocks(JsonObject& root, const Config& c) {
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
    JsonObject a(root.key("access_log"));
    a.str("path", c.access_log_path);
    a.str("format", c.access_log_format);
  }
  if (c.redis) {
    const RedisConfig& rc = *c.redis;
    JsonObject r(root.key("redis"));
    r.str("mode", rc.mode);
    if (rc.mode == "standalone" && !rc.addresses.empty()) r.str("address", rc.addresses.front());
    else string_array(r.key(rc.mode == "cluster" ? "nodes" : "sentinels"), rc.addresses);
    if (rc.mode == "sentinel") r.str("master_name", rc.master_name);
    if (!rc.username.empty()) r.str("username", rc.username);
    if (!rc.password_from.empty()) r.str("password", "from " + rc.password_from);  // never the secret
    r.ms("timeout", rc.timeout_ms);
    if (rc.replicas > 0) r.num("replicas", rc.replicas);
    else r.str("replicas", "auto");
  }

}

}  // namespace

std::string upstream_to_json(const UpstreamConfig& u) {
  std::string out;
  upstream_json(out, u);
  return out;
}

std::string route_to_json(const RouteConfig& r) {
  std::string out;
  route_json(out, r);
  return out;
}

std::string restart_json(const Config& c) {
  std::string out;
  {
    JsonObject root(out);
    restart_blocks(root, c);
  }
  return out;
}

std::string config_to_json(const Config& c) {
  std::string out;
  {
    JsonObject root(out);
    restart_blocks(root, c);
    {
      JsonObject d(root.key("drain"));
      d.ms("delay", c.drain_delay_ms);
      d.ms("timeout", c.drain_timeout_ms);
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
      if (l.tls) {
        JsonObject t(o.key("tls"));
        t.str("cert", l.tls->cert);
        t.str("key", l.tls->key);
        if (!l.tls->client_ca.empty()) t.str("client_ca", l.tls->client_ca);
        t.str("min_version", l.tls->min_version);
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
      if (i) us.push_back(',');
      upstream_json(us, c.upstreams[i]);
    }
    us.push_back(']');
  }
  return out;
}

}  // namespace bulwark
