// Plain configuration structs: what config::load() produces from the YAML file.
// Every field carries its documented default (docs/configuration.md); durations are
// milliseconds, sizes bytes, ratios 0..1, rates requests per second.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "net/address.h"

namespace bulwark {

struct SourceMark {
  int line = 0;  // 1-based; 0 when unknown
  int column = 0;
};

struct RouteMatch {
  std::string prefix = "/";
  std::string host;                  // "" any, "example.com" exact, "*.example.com" suffix
  std::vector<std::string> methods;  // empty: any
  std::vector<std::pair<std::string, std::string>> headers;  // name lower-cased, exact value
};

struct RateLimitConfig {
  double rate_per_second = 0;
  double burst = 0;
  std::string key = "client_ip";  // client_ip | header:NAME | route
  std::string scope = "local";    // local | global
  std::string on_redis_failure = "local";
  bool enforce = true;
};

struct RetryConfig {
  int attempts = 2;
  std::vector<std::string> on = {"connect-failure", "reset", "gateway-error"};
  std::uint64_t per_try_timeout_ms = 0;  // 0: only the route timeout applies
  std::uint64_t backoff_base_ms = 25;
  std::uint64_t backoff_max_ms = 250;
  double budget_ratio = 0.2;
  double budget_min_per_second = 10;
  std::string methods = "idempotent";
  std::uint64_t max_body_bytes = 64 * 1024;
};

struct FaultConfig {
  double delay_ratio = 0;
  std::uint64_t delay_ms = 0;
  double abort_ratio = 0;
  int abort_status = 503;
  // Requests may force a fault with x-bulwark-fault (drills); off unless set.
  bool allow_header = false;
};

struct RouteConfig {
  std::string name;
  RouteMatch match;
  std::string upstream;
  std::uint64_t timeout_ms = 15000;  // whole request; 0 disables
  std::optional<RateLimitConfig> rate_limit;
  std::optional<RetryConfig> retry;
  std::optional<FaultConfig> fault;
  SourceMark mark;
};

class TlsServerContext;

// tls on a listener: terminate TLS.
struct ListenerTlsConfig {
  std::string cert;       // certificate chain (PEM), leaf first
  std::string key;        // its private key (PEM)
  std::string client_ca;  // "" : no client certificates asked for; else required (mTLS)
  std::string min_version = "1.2";  // 1.2 | 1.3
  // ALPN protocols offered, from the listener's `protocols` (h2 first when both).
  bool alpn_h2 = false;
  bool alpn_http1 = true;
  // Made by the loader from the files (which is how it checks them): what new connections
  // use. A reload reads the files again, so a rotated certificate takes effect then.
  std::shared_ptr<const TlsServerContext> context;
};

struct ListenerConfig {
  std::string name;
  std::string listen;
  Address address;
  std::uint64_t header_timeout_ms = 10000;
  std::uint64_t idle_timeout_ms = 60000;
  std::uint64_t body_idle_timeout_ms = 30000;  // longest gap while reading a request body
  std::uint64_t max_connections = 10000;
  std::uint64_t max_header_bytes = 64 * 1024;
  std::uint64_t max_headers = 100;  // header lines of a request head (and of its trailers)
  std::uint64_t max_body_bytes = 10 * 1024 * 1024;
  std::optional<ListenerTlsConfig> tls;
  // `protocols`: HTTP/1.x; cleartext HTTP/2 with prior knowledge (h2c, plain listeners); HTTP/2
  // chosen by ALPN (h2, TLS listeners).
  bool http1 = true;
  bool h2c = false;
  bool h2 = false;
  // `http2`: what Bulwark's SETTINGS announce to HTTP/2 clients.
  std::uint64_t h2_max_concurrent_streams = 100;
  std::uint64_t h2_initial_window = 256 * 1024;  // per stream; the connection's is 4x (at least 1 MiB)
  std::uint64_t h2_max_frame_size = 16 * 1024;
  std::vector<RouteConfig> routes;
};

struct PoolConfig {
  std::uint64_t max_connections = 1024;
  std::uint64_t max_idle = 128;
  std::uint64_t idle_timeout_ms = 60000;
};

struct UpstreamLimitsConfig {
  std::uint64_t max_requests = 1024;
  std::uint64_t max_pending = 1024;
  std::uint64_t pending_timeout_ms = 1000;
};

struct CircuitBreakerConfig {
  int consecutive_failures = 5;
  double failure_rate = 0.5;
  std::uint64_t window_ms = 10000;
  int min_requests = 20;
  std::uint64_t slow_call_ms = 0;  // 0: slow calls not counted
  double slow_call_rate = 1.0;
  std::uint64_t open_for_ms = 30000;
  std::uint64_t max_open_for_ms = 300000;
  int half_open_requests = 3;
  double max_ejected = 0.5;
  // A passing active health check that started after the breaker opened ends the open period
  // at once: the breaker half-opens and its probes decide (key `half_open_on_health_check`).
  bool half_open_on_health_check = true;
  // What counts as a failure (key `failure_on`).
  bool on_connect_failure = true;
  bool on_reset = true;
  bool on_timeout = true;
  bool on_5xx = true;
  std::vector<int> on_status;  // further status codes, e.g. 429
  bool counts_status(int status) const {
    if (on_5xx && status >= 500 && status <= 599) return true;
    for (int s : on_status)
      if (s == status) return true;
    return false;
  }
};

struct StatusRange {
  int low = 200;
  int high = 399;
};

struct HealthCheckConfig {
  std::string type = "http";
  std::string path = "/healthz";
  std::uint64_t interval_ms = 5000;
  std::uint64_t timeout_ms = 1000;
  double jitter = 0.1;
  int healthy_threshold = 2;
  int unhealthy_threshold = 3;
  std::vector<StatusRange> expected_status = {{200, 399}};
};

struct LoadSheddingConfig {
  std::string algorithm = "gradient2";
  int initial_limit = 20;
  int min_limit = 5;
  int max_limit = 1000;
  std::uint64_t queue_size = 100;
  std::uint64_t queue_timeout_ms = 50;
  std::string priority_header = "x-priority";
  // Share of the limit kept for critical requests while they are present (binds only at the
  // limit).
  double critical_reserve = 0.1;
  bool enforce = true;  // false: shadow mode, counted and logged, never shed
};

struct Endpoint {
  std::string spec;  // as written: host:port
  std::string host;
  int port = 0;
  Address address;  // set when host is an IP address; DNS names are resolved at run time
  bool is_ip() const { return address.valid(); }
};

// tls on an upstream: originate TLS to its endpoints.
class TlsClientContext;

struct UpstreamTlsConfig {
  std::string sni;            // "" : the endpoint's host name (none for an IP address)
  std::string ca = "system";  // system (the OS bundle) | a PEM file
  bool verify = true;         // the chain, and the name (sni, else the endpoint's host or IP)
  std::string cert;           // client certificate chain (PEM) for mTLS, with `key`
  std::string key;
  bool alpn_h2 = false;       // ALPN offers h2 (protocol: h2), else http/1.1
  // Made by the loader from the files (off the event loop for a reload); kept with the
  // upstream's state while its block is unchanged.
  std::shared_ptr<const TlsClientContext> context;
};

struct UpstreamConfig {
  std::string name;
  std::vector<Endpoint> endpoints;
  std::uint64_t dns_refresh_ms = 30000;
  std::string balance = "least_request";
  std::uint64_t connect_timeout_ms = 1000;
  // A response head (with the 1xx heads before it) or trailer section larger than this is a
  // protocol error: 502 upstream-protocol-error.
  std::uint64_t max_response_header_bytes = 64 * 1024;
  PoolConfig pool;
  UpstreamLimitsConfig limits;
  std::optional<CircuitBreakerConfig> circuit_breaker;
  std::optional<HealthCheckConfig> health_check;
  std::optional<LoadSheddingConfig> load_shedding;
  std::optional<UpstreamTlsConfig> tls;
  // protocol: http1 | h2. With h2, the `http2` block: streams Bulwark opens on one connection
  // at most (fewer when the upstream's SETTINGS say so), the window each stream's response
  // gets, and PING keepalive: after ping_interval without a byte from the upstream a PING
  // goes out, and a connection that stays silent for ping_timeout after it is closed (its
  // streams fail as resets).
  bool h2 = false;
  std::uint64_t h2_max_concurrent_streams = 100;
  std::uint64_t h2_initial_window = 256 * 1024;
  std::uint64_t h2_ping_interval_ms = 30000;
  std::uint64_t h2_ping_timeout_ms = 10000;
};

// The Redis that global rate limits share (the top-level `redis` block).
struct RedisConfig {
  std::string mode = "standalone";     // standalone | sentinel | cluster
  std::vector<std::string> addresses;  // HOST:PORT (names allowed): the server; cluster seed
                                       // nodes; the sentinels
  std::string master_name;             // sentinel: the monitored master's name
  std::string username;                // AUTH with a username (Redis 6 ACL); empty: none
  std::string password;                // from password_file or password_env; never printed
  std::string password_from;           // "file PATH" | "env NAME" | "" (for /config)
  std::uint64_t timeout_ms = 20;
  // Replicas sharing the global limits, for on_redis_failure: local (each takes 1/replicas of
  // the quota while Redis is out): 0 = learned from Redis (`auto`), else this fixed number.
  int replicas = 0;
  bool operator==(const RedisConfig&) const = default;
};

struct Config {
  std::string file;
  std::string admin_listen = "127.0.0.1:9901";
  Address admin_address;
  std::uint64_t admin_header_timeout_ms = 5000;  // admin.timeouts.header
  std::uint64_t admin_idle_timeout_ms = 60000;   // admin.timeouts.idle
  std::uint64_t admin_max_connections = 64;      // admin.max_connections

  int workers = 1;  // resolved: 0 in the file means one per CPU
  // drain.delay: after SIGTERM, /ready answers 503 while everything keeps serving this long
  // (so that Kubernetes takes the pod out of its Services first); then the drain proper.
  std::uint64_t drain_delay_ms = 0;
  std::uint64_t drain_timeout_ms = 20000;
  std::string access_log_path = "stdout";  // stdout | stderr | FILE | off
  std::string access_log_format = "json";
  std::optional<RedisConfig> redis;  // set when the file has a redis block
  std::vector<ListenerConfig> listeners;
  std::vector<UpstreamConfig> upstreams;
  // Where each key was written, by key path ("listeners[0].routes[1].retry.attempts"; a list
  // item, "upstreams[2]", by the item's position), for warnings (config/lint.h).
  std::map<std::string, SourceMark> marks;

  const UpstreamConfig* find_upstream(const std::string& name) const;
  // The position of the key at `path`, or else of the nearest enclosing key written in the
  // file (a default value has no position of its own); {0, 0} when none is known.
  SourceMark mark_of(std::string path) const;
};

}  // namespace bulwark
