// Readers of the resilience blocks of a route (rate_limit, retry, fault) and of an upstream
// (circuit_breaker, health_check, load_shedding), and the top-level redis block that global
// rate limits use: every field checked, every error recorded with its position, documented
// defaults for what a present block leaves out.
#include "config/resilience_blocks.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "config/values.h"
#include "http/grpc.h"
#include "http/headers.h"
#include "net/address.h"

namespace bulwark {
namespace {

bool parse_status_range(const std::string& text, StatusRange& range) {
  auto dash = text.find('-');
  std::string lo = dash == std::string::npos ? text : text.substr(0, dash);
  std::string hi = dash == std::string::npos ? text : text.substr(dash + 1);
  auto number = [](const std::string& s, int& v) {
    if (s.size() != 3 || !std::all_of(s.begin(), s.end(), ::isdigit)) return false;
    v = std::stoi(s);
    return v >= 100 && v <= 599;
  };
  return number(lo, range.low) && number(hi, range.high) && range.low <= range.high;
}

}  // namespace

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

void read_rate_limit(const YamlFields& parent, std::optional<RateLimitConfig>& out) {
  YamlFields f(parent.errors(), parent.node("rate_limit"), parent.path("rate_limit"),
               {"rate", "burst", "key", "scope", "on_redis_failure", "enforce"});
  if (!f.ok()) return;
  RateLimitConfig c;
  if (f.required("rate")) f.rate("rate", c.rate_per_second);
  c.burst = std::max(1.0, c.rate_per_second);
  std::uint64_t burst = 0;
  f.count("burst", burst, 1, 1'000'000'000);
  if (burst) c.burst = static_cast<double>(burst);
  f.string("key", c.key);
  if (c.key != "client_ip" && c.key != "route" &&
      !(c.key.rfind("header:", 0) == 0 && is_token(c.key.substr(7))))
    f.error("key", "must be client_ip, route or header:NAME");
  f.string("scope", c.scope);
  if (c.scope != "local" && c.scope != "global") f.error("scope", "must be local or global");
  f.string("on_redis_failure", c.on_redis_failure);
  if (c.on_redis_failure != "local" && c.on_redis_failure != "allow" &&
      c.on_redis_failure != "deny")
    f.error("on_redis_failure", "must be local, allow or deny");
  f.boolean("enforce", c.enforce);
  out = c;
}

void read_retry(const YamlFields& parent, std::optional<RetryConfig>& out) {
  YamlFields f(
      parent.errors(), parent.node("retry"), parent.path("retry"),
      {"attempts", "on", "per_try_timeout", "backoff", "budget", "methods", "max_body_bytes"});
  if (!f.ok()) return;
  RetryConfig c;
  f.integer("attempts", c.attempts, 1, 10);
  f.string_list("on", c.on);
  static const std::set<std::string> kinds = {"connect-failure", "reset", "gateway-error", "5xx",
                                              "timeout",         "429"};
  for (const auto& kind : c.on) {
    bool status = kind.size() == 3 && std::all_of(kind.begin(), kind.end(), ::isdigit) &&
                  kind[0] >= '1' && kind[0] <= '5';
    if (!kinds.count(kind) && !status && grpc_retry_index(kind) < 0)
      f.error("on", "unknown retry condition '" + kind +
                        "' (expected connect-failure, reset, gateway-error, 5xx, timeout, 429, "
                        "a status code, or a gRPC status: cancelled, deadline-exceeded, "
                        "resource-exhausted, internal, unavailable)");
  }
  f.duration("per_try_timeout", c.per_try_timeout_ms, false);
  if (f.has("backoff")) {
    YamlFields b(f.errors(), f.node("backoff"), f.path("backoff"), {"base", "max"});
    b.duration("base", c.backoff_base_ms);
    b.duration("max", c.backoff_max_ms);
    if (c.backoff_max_ms < c.backoff_base_ms) b.error("max", "must not be less than base");
  }
  if (f.has("budget")) {
    YamlFields b(f.errors(), f.node("budget"), f.path("budget"), {"ratio", "min_per_second"});
    b.ratio("ratio", c.budget_ratio);
    std::uint64_t min = static_cast<std::uint64_t>(c.budget_min_per_second);
    b.count("min_per_second", min, 0, kMaxCount);
    c.budget_min_per_second = static_cast<double>(min);
  }
  f.string("methods", c.methods);
  if (c.methods != "idempotent" && c.methods != "all")
    f.error("methods", "must be idempotent or all");
  f.size("max_body_bytes", c.max_body_bytes);
  out = c;
}

void read_fault(const YamlFields& parent, std::optional<FaultConfig>& out) {
  YamlFields f(parent.errors(), parent.node("fault"), parent.path("fault"),
               {"delay", "abort", "allow_header"});
  if (!f.ok()) return;
  FaultConfig c;
  if (f.has("delay")) {
    YamlFields d(f.errors(), f.node("delay"), f.path("delay"), {"percent", "duration"});
    if (d.required("percent")) d.ratio("percent", c.delay_ratio);
    if (d.required("duration")) d.duration("duration", c.delay_ms);
  }
  if (f.has("abort")) {
    YamlFields a(f.errors(), f.node("abort"), f.path("abort"), {"percent", "status"});
    if (a.required("percent")) a.ratio("percent", c.abort_ratio);
    a.integer("status", c.abort_status, 200, 599);
  }
  f.boolean("allow_header", c.allow_header);
  out = c;
}

void read_circuit_breaker(const YamlFields& parent, std::optional<CircuitBreakerConfig>& out) {
  YamlFields f(parent.errors(), parent.node("circuit_breaker"), parent.path("circuit_breaker"),
               {"consecutive_failures", "failure_rate", "window", "min_requests", "slow_call",
                "open_for", "max_open_for", "half_open_requests", "max_ejected", "failure_on",
                "half_open_on_health_check"});
  if (!f.ok()) return;
  CircuitBreakerConfig c;
  f.integer("consecutive_failures", c.consecutive_failures, 0, 1'000'000);
  f.ratio("failure_rate", c.failure_rate);
  f.duration("window", c.window_ms, false);
  f.integer("min_requests", c.min_requests, 1, 1'000'000);
  if (f.has("slow_call")) {
    YamlFields s(f.errors(), f.node("slow_call"), f.path("slow_call"), {"duration", "rate"});
    if (s.required("duration")) s.duration("duration", c.slow_call_ms, false);
    s.ratio("rate", c.slow_call_rate);
  }
  f.duration("open_for", c.open_for_ms, false);
  f.duration("max_open_for", c.max_open_for_ms, false);
  if (c.max_open_for_ms < c.open_for_ms) f.error("max_open_for", "must not be less than open_for");
  f.integer("half_open_requests", c.half_open_requests, 1, 1000);
  f.ratio("max_ejected", c.max_ejected);
  f.boolean("half_open_on_health_check", c.half_open_on_health_check);
  if (f.has("failure_on")) {
    std::vector<std::string> kinds;
    f.string_list("failure_on", kinds);
    c.on_connect_failure = c.on_reset = c.on_timeout = c.on_5xx = false;
    for (const auto& k : kinds) {
      bool status =
          k.size() == 3 && std::all_of(k.begin(), k.end(), ::isdigit) && k[0] >= '1' && k[0] <= '5';
      if (k == "connect-failure")
        c.on_connect_failure = true;
      else if (k == "reset")
        c.on_reset = true;
      else if (k == "timeout")
        c.on_timeout = true;
      else if (k == "5xx")
        c.on_5xx = true;
      else if (status)
        c.on_status.push_back(std::stoi(k));
      else
        f.error("failure_on",
                "unknown failure kind '" + k +
                    "' (expected connect-failure, reset, timeout, 5xx or a status code)");
    }
  }
  out = c;
}

void read_health_check(const YamlFields& parent, std::optional<HealthCheckConfig>& out) {
  YamlFields f(parent.errors(), parent.node("health_check"), parent.path("health_check"),
               {"type", "path", "interval", "timeout", "jitter", "healthy_threshold",
                "unhealthy_threshold", "expected_status"});
  if (!f.ok()) return;
  HealthCheckConfig c;
  f.string("type", c.type);
  if (c.type != "http" && c.type != "tcp") f.error("type", "must be http or tcp");
  f.string("path", c.path);
  if (c.path.empty() || c.path[0] != '/') f.error("path", "must start with '/'");
  f.duration("interval", c.interval_ms, false);
  f.duration("timeout", c.timeout_ms, false);
  f.ratio("jitter", c.jitter);
  f.integer("healthy_threshold", c.healthy_threshold, 1, 100);
  f.integer("unhealthy_threshold", c.unhealthy_threshold, 1, 100);
  if (f.has("expected_status")) {
    std::vector<std::string> items;
    f.string_list("expected_status", items);
    c.expected_status.clear();
    for (const auto& item : items) {
      StatusRange r;
      if (!parse_status_range(item, r))
        f.error("expected_status", "invalid status or range '" + item + "' (e.g. 200 or 200-399)");
      else
        c.expected_status.push_back(r);
    }
  }
  out = c;
}

void read_load_shedding(const YamlFields& parent, std::optional<LoadSheddingConfig>& out) {
  YamlFields f(
      parent.errors(), parent.node("load_shedding"), parent.path("load_shedding"),
      {"algorithm", "initial_limit", "min_limit", "max_limit", "queue", "priority_header",
       "critical_reserve", "enforce"});
  if (!f.ok()) return;
  LoadSheddingConfig c;
  f.string("algorithm", c.algorithm);
  if (c.algorithm != "gradient2" && c.algorithm != "aimd" && c.algorithm != "vegas" &&
      c.algorithm != "fixed")
    f.error("algorithm", "must be gradient2, aimd, vegas or fixed");
  f.integer("initial_limit", c.initial_limit, 1, 1'000'000);
  f.integer("min_limit", c.min_limit, 1, 1'000'000);
  f.integer("max_limit", c.max_limit, 1, 1'000'000);
  if (c.min_limit > c.max_limit)
    f.error("min_limit", "must not exceed max_limit");
  else if (c.initial_limit < c.min_limit || c.initial_limit > c.max_limit)
    f.error("initial_limit", "must be within [min_limit, max_limit] (" +
                                 std::to_string(c.min_limit) + ", " + std::to_string(c.max_limit) +
                                 ")");
  if (f.has("queue")) {
    YamlFields q(f.errors(), f.node("queue"), f.path("queue"), {"size", "timeout"});
    q.count("size", c.queue_size, 0, kMaxCount);
    q.duration("timeout", c.queue_timeout_ms);
  }
  f.string("priority_header", c.priority_header);
  if (!c.priority_header.empty() && !is_token(c.priority_header))
    f.error("priority_header", "must be a header field name (a token: no spaces, no ':')");
  c.priority_header = lower(c.priority_header);
  f.ratio("critical_reserve", c.critical_reserve);
  if (c.critical_reserve >= 1) f.error("critical_reserve", "must be below 1 (100%)");
  f.boolean("enforce", c.enforce);
  out = c;
}

// The top-level redis block (RedisConfig). Addresses are HOST:PORT, names allowed (resolved
// without blocking when connecting); the password comes from a file or an environment
// variable, never from the YAML itself.
void read_redis(const YamlFields& root, std::optional<RedisConfig>& out) {
  YamlFields r(root.errors(), root.node("redis"), "redis",
               {"mode", "address", "nodes", "sentinels", "master_name", "username",
                "password_file", "password_env", "timeout", "replicas"});
  if (!r.ok()) return;
  RedisConfig rc;
  r.string("mode", rc.mode);
  const char* list_key = nullptr;
  if (rc.mode == "standalone") {
    if (r.required("address")) {
      std::string address;
      r.string("address", address);
      if (!address.empty()) rc.addresses.push_back(address);
    }
    for (const char* k : {"nodes", "sentinels", "master_name"})
      if (r.has(k)) r.error(k, std::string("only with mode: ") + (std::string(k) == "nodes" ? "cluster" : "sentinel"));
  } else if (rc.mode == "cluster" || rc.mode == "sentinel") {
    list_key = rc.mode == "cluster" ? "nodes" : "sentinels";
    if (r.required(list_key)) {
      r.string_list(list_key, rc.addresses);
      if (rc.addresses.empty() && r.node(list_key).IsSequence()) r.error(list_key, "needs at least one HOST:PORT");
    }
    if (r.has("address"))
      r.error("address", std::string("with mode: ") + rc.mode + ", list the addresses under " + list_key);
    if (rc.mode == "sentinel") {
      if (r.required("master_name")) r.string("master_name", rc.master_name);
    } else if (r.has("master_name")) {
      r.error("master_name", "only with mode: sentinel");
    }
    if (rc.mode == "cluster" && r.has("sentinels")) r.error("sentinels", "only with mode: sentinel");
    if (rc.mode == "sentinel" && r.has("nodes")) r.error("nodes", "only with mode: cluster");
  } else {
    r.error("mode", "must be standalone, sentinel or cluster");
  }
  for (const std::string& address : rc.addresses) {
    std::string host, message;
    int port = 0;
    if (!split_host_port(address, host, port, message) || port == 0)
      r.error(list_key ? list_key : "address", "'" + address + "': " + (message.empty() ? "port 0" : message));
  }
  r.string("username", rc.username);
  if (r.has("password_file") && r.has("password_env")) {
    r.error("password_env", "give password_file or password_env, not both");
  } else if (r.has("password_file")) {
    std::string path;
    r.string("password_file", path);
    std::ifstream in(path);
    std::stringstream text;
    if (in) text << in.rdbuf();
    if (!in) {
      r.error("password_file", "cannot read " + path);
    } else {
      rc.password = text.str();
      while (!rc.password.empty() && (rc.password.back() == '\n' || rc.password.back() == '\r'))
        rc.password.pop_back();
      if (rc.password.empty()) r.error("password_file", path + " is empty");
      rc.password_from = "file " + path;
    }
  } else if (r.has("password_env")) {
    std::string name;
    r.string("password_env", name);
    const char* value = name.empty() ? nullptr : std::getenv(name.c_str());
    if (!value || !*value) r.error("password_env", "the environment variable " + name + " is not set");
    else rc.password = value;
    rc.password_from = "env " + name;
  }
  if (!rc.username.empty() && rc.password.empty())
    r.error("username", "needs password_file or password_env");
  r.duration("timeout", rc.timeout_ms, false);
  if (r.has("replicas")) {
    std::string text;
    if (r.scalar("replicas", text) && text != "auto") r.integer("replicas", rc.replicas, 1, 100000);
  }
  out = rc;
}

}  // namespace bulwark
