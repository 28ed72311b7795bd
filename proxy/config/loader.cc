#include "config/loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <thread>

#include "config/resilience_blocks.h"
#include "config/values.h"
#include "config/yaml_reader.h"
#include "http/headers.h"
#include "net/tls.h"

namespace bulwark {
namespace {


// A Kubernetes ConfigMap holds at most 1 MiB; a YAML parse costs far more memory than the
// bytes (a long flow sequence about 150 times as much), so the cap is kept low.
constexpr std::size_t kMaxConfigBytes = 4 * 1024 * 1024;

// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
bool is_host_name(const std::string& host) {
  if (host.empty() || host.size() > 253) return false;
  std::size_t label = 0;
  for (std::size_t i = 0; i <= host.size(); ++i) {
    if (i == host.size() || host[i] == '.') {
      if (label == 0 || label > 63 || host[i - 1] == '-') return false;
      label = 0;
      continue;
    }
    unsigned char c = static_cast<unsigned char>(host[i]);
    if (!(std::isalnum(c) || (c == '-' && label > 0))) return false;
    ++label;
  }
  return true;
}

std::string indexed(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

void read_match(const YamlFields& parent, RouteMatch& match) {
  if (!parent.has("match")) return;
  YamlFields f(parent.errors(), parent.node("match"), parent.path("match"),
               {"prefix", "host", "methods", "headers"});
  if (!f.ok()) return;
  f.string("prefix", match.prefix);
  if (match.prefix.empty() || match.prefix[0] != '/') f.error("prefix", "must start with '/'");
  f.string("host", match.host);
  match.host = lower(match.host);
  if (!match.host.empty()) {
    auto star = match.host.find('*');
    if (star != std::string::npos && (star != 0 || match.host.size() < 3 || match.host[1] != '.' ||
                                      match.host.find('*', 1) != std::string::npos))
      f.error("host", "a wildcard is only allowed as a leading '*.' (e.g. *.example.com)");
  }
  f.string_list("methods", match.methods);
  for (const auto& m : match.methods)
    if (!is_token(m) ||
        std::any_of(m.begin(), m.end(), [](unsigned char ch) { return std::islower(ch); }))
      f.error("methods", "method '" + m + "' must be an upper-case token such as GET");
  if (f.has("headers")) {
    YAML::Node headers = f.node("headers");
    if (!headers.IsMap()) {
      f.error("headers", "expected a mapping of header name to value");
    } else {
      for (const auto& item : headers) {
        std::string name = item.first.Scalar();
        if (!is_token(name)) {
          f.errors().add(item.first.Mark(), f.path("headers"),
                         "invalid header name '" + name + "'");
          continue;
        }
        if (!item.second.IsScalar()) {
          f.errors().add(item.second.Mark(), join_path(f.path("headers"), name),
                         "expected a string value");
          continue;
        }
        match.headers.emplace_back(lower(name), item.second.Scalar());
      }
    }
  }
}

void read_route(ConfigErrors& errors, const YAML::Node& node, const std::string& path,
                RouteConfig& route) {
  YamlFields f(errors, node, path,
               {"name", "match", "upstream", "timeout", "rate_limit", "retry", "fault"});
  route.mark = {f.mark().is_null() ? 0 : f.mark().line + 1,
                f.mark().is_null() ? 0 : f.mark().column + 1};
  if (!f.ok()) return;
  if (f.required("name")) f.string("name", route.name);
  read_match(f, route.match);
  if (f.required("upstream")) f.string("upstream", route.upstream);
  f.duration("timeout", route.timeout_ms);
  if (f.has("rate_limit")) read_rate_limit(f, route.rate_limit);
  if (f.has("retry")) read_retry(f, route.retry);
  if (f.has("fault")) read_fault(f, route.fault);
}

// A context that could not be made from a tls block's files: "KEY: why" is reported at KEY
// when it is one of `keys`, else at the block.
void tls_file_error(ConfigErrors& errors, const YamlFields& f, const YamlFields& t,
                    const std::string& error, std::initializer_list<const char*> keys) {
  std::size_t colon = error.find(": ");
  std::string key = colon == std::string::npos ? "" : error.substr(0, colon);
  for (const char* k : keys)
    if (key == k) return t.error(k, error.substr(colon + 2));
  errors.add(f.node("tls").Mark(), f.path("tls"), error);
}

// tls on an upstream. The files are loaded here as the proxy will load them (a missing CA
// file or a key that does not match its certificate is an error of the config, not of the
// first request).
void read_upstream_tls(ConfigErrors& errors, const YamlFields& f, bool h2,
                       std::optional<UpstreamTlsConfig>& out) {
  YamlFields t(errors, f.node("tls"), f.path("tls"), {"sni", "ca", "verify", "cert", "key"});
  if (!t.ok()) return;
  UpstreamTlsConfig c;
  t.string("sni", c.sni);
  t.string("ca", c.ca);
  t.boolean("verify", c.verify);
  t.string("cert", c.cert);
  t.string("key", c.key);
  c.alpn_h2 = h2;
  std::size_t before = errors.lines().size();
  if (t.has("sni") && c.sni.empty())
    t.error("sni", "must not be empty (leave it out for the endpoint's host)");
  else if (!c.sni.empty() && !is_host_name(c.sni))
    t.error("sni", "must be a host name (letters, digits, '-' and '.', at most 253 characters)");
  if (c.ca.empty()) t.error("ca", "must be system or a file");
  if (t.has("cert") != t.has("key"))
    t.error(t.has("cert") ? "cert" : "key",
            "cert and key go together (a client certificate and its private key)");
  if (errors.lines().size() == before) {
    std::string error;
    auto context = TlsClientContext::create(c, error);
    if (!context)
      tls_file_error(errors, f, t, error, {"ca", "cert", "key"});
    else
      c.context = std::move(context);
  }
  out = std::move(c);
}

// tls on a listener: the context new connections will use is made here, from the files.
void read_listener_tls(ConfigErrors& errors, const YamlFields& f, const ListenerConfig& l,
                       std::optional<ListenerTlsConfig>& out) {
  YamlFields t(errors, f.node("tls"), f.path("tls"), {"cert", "key", "client_ca", "min_version"});
  if (!t.ok()) return;
  ListenerTlsConfig c;
  std::size_t before = errors.lines().size();
  if (t.required("cert")) t.string("cert", c.cert);
  if (t.required("key")) t.string("key", c.key);
  t.string("client_ca", c.client_ca);
  t.string("min_version", c.min_version);
  if (c.min_version != "1.2" && c.min_version != "1.3")
    t.error("min_version", "must be 1.2 or 1.3");
  c.alpn_h2 = l.h2;
  c.alpn_http1 = l.http1;
  if (errors.lines().size() == before) {
    std::string error;
    auto context = TlsServerContext::create(c, error);
    if (!context)
      tls_file_error(errors, f, t, error, {"cert", "key", "client_ca"});
    else
      c.context = std::move(context);
  }
  out = std::move(c);
}

// protocols: [http1, h2c] on a plain listener, [http1, h2] on a TLS listener.
void read_protocols(ConfigErrors& errors, const YamlFields& f, ListenerConfig& l) {
  std::vector<std::string> names;
  std::size_t before = errors.lines().size();
  f.string_list("protocols", names);
  if (errors.lines().size() != before) return;
  if (names.empty()) {
    f.error("protocols", "expected at least one of http1, h2c, h2");
    return;
  }
  l.http1 = l.h2c = l.h2 = false;
  for (const std::string& n : names) {
    bool* flag = n == "http1" ? &l.http1 : n == "h2c" ? &l.h2c : n == "h2" ? &l.h2 : nullptr;
    if (!flag) {
      f.error("protocols", "unknown protocol '" + n + "' (expected http1, h2c or h2)");
      continue;
    }
    if (*flag) f.error("protocols", "'" + n + "' is listed twice");
    *flag = true;
  }
}

void read_listener(ConfigErrors& errors, const YAML::Node& node, const std::string& path,
                   ListenerConfig& l) {
  YamlFields f(errors, node, path,
               {"name", "listen", "timeouts", "limits", "tls", "protocols", "http2", "routes"});
  if (!f.ok()) return;
  if (f.required("name")) f.string("name", l.name);
  if (f.required("listen")) {
    f.string("listen", l.listen);
    std::string message;
    if (!l.listen.empty() && !parse_ip_address(l.listen, l.address, message))
      f.error("listen", message);
  }
  if (f.has("timeouts")) {
    YamlFields t(errors, f.node("timeouts"), f.path("timeouts"), {"header", "idle", "body_idle"});
    t.duration("header", l.header_timeout_ms, false);
    t.duration("idle", l.idle_timeout_ms, false);
    t.duration("body_idle", l.body_idle_timeout_ms, false);
  }
  if (f.has("protocols")) read_protocols(errors, f, l);
  if (f.has("http2")) {
    YamlFields h(errors, f.node("http2"), f.path("http2"),
                 {"max_concurrent_streams", "initial_window", "max_frame_size"});
    h.count("max_concurrent_streams", l.h2_max_concurrent_streams, 1, 10000);
    h.size("initial_window", l.h2_initial_window);
    if (l.h2_initial_window < 1024 || l.h2_initial_window > 0x7fffffff)
      h.error("initial_window", "must be between 1KiB and 2GiB - 1");
    h.size("max_frame_size", l.h2_max_frame_size);
    if (l.h2_max_frame_size < 16384 || l.h2_max_frame_size > 16777215)
      h.error("max_frame_size", "must be between 16KiB and 16MiB - 1 (RFC 9113 6.5.2)");
  }
  if (f.has("tls")) read_listener_tls(errors, f, l, l.tls);
  if (f.has("tls") && l.h2c)
    f.error("protocols", "h2c is cleartext HTTP/2: a TLS listener offers HTTP/2 as h2 (ALPN)");
  if (!f.has("tls") && l.h2)
    f.error("protocols", "h2 is chosen by ALPN and needs tls; cleartext HTTP/2 is h2c");
  if (f.has("limits")) {
    YamlFields t(errors, f.node("limits"), f.path("limits"),
                 {"max_connections", "max_header_bytes", "max_headers", "max_body_bytes"});
    t.count("max_connections", l.max_connections, 1, kMaxCount);
    t.size("max_header_bytes", l.max_header_bytes);
    if (l.max_header_bytes < 256 || l.max_header_bytes > (1u << 20))
      t.error("max_header_bytes", "must be between 256 and 1MiB");
    t.count("max_headers", l.max_headers, 1, 10000);
    t.size("max_body_bytes", l.max_body_bytes);
  }
  if (!f.required("routes")) return;
  YAML::Node routes = f.node("routes");
  if (!routes.IsSequence() || routes.size() == 0) {
    f.error("routes", "expected a non-empty list of routes");
    return;
  }
  std::set<std::string> names;
  for (std::size_t i = 0; i < routes.size(); ++i) {
    RouteConfig route;
    read_route(errors, routes[i], indexed(f.path("routes"), i), route);
    if (!route.name.empty() && !names.insert(route.name).second)
      errors.add(routes[i]["name"].Mark(), indexed(f.path("routes"), i) + ".name",
                 "duplicate route name '" + route.name + "'");
    l.routes.push_back(std::move(route));
  }
}

void read_upstream(ConfigErrors& errors, const YAML::Node& node, const std::string& path,
                   UpstreamConfig& u) {
  YamlFields f(errors, node, path,
               {"name", "endpoints", "dns_refresh", "balance", "connect_timeout",
                "max_response_header_bytes", "pool", "limits", "circuit_breaker", "health_check",
                "load_shedding", "tls", "protocol", "http2"});
  if (!f.ok()) return;
  if (f.required("name")) f.string("name", u.name);
  if (f.required("endpoints")) {
    YAML::Node list = f.node("endpoints");
    if (!list.IsSequence() || list.size() == 0) {
      f.error("endpoints", "expected a non-empty list of HOST:PORT");
    } else {
      std::set<std::string> seen;
      for (std::size_t i = 0; i < list.size(); ++i) {
        std::string p = indexed(f.path("endpoints"), i);
        if (!list[i].IsScalar()) {
          errors.add(list[i].Mark(), p, "expected HOST:PORT");
          continue;
        }
        Endpoint e;
        e.spec = list[i].Scalar();
        std::string message;
        if (!split_host_port(e.spec, e.host, e.port, message)) {
          errors.add(list[i].Mark(), p, message);
          continue;
        }
        if (e.port == 0) {
          errors.add(list[i].Mark(), p, "port must not be 0");
          continue;
        }
        if (!parse_ip_address(e.spec, e.address, message) && !is_host_name(e.host)) {
          errors.add(list[i].Mark(), p,
                     "'" + e.host + "' is neither an IP address nor a host name");
          continue;
        }
        std::string key =
            e.is_ip() ? e.address.to_string() : lower(e.host) + ":" + std::to_string(e.port);
        if (!seen.insert(key).second) {
          errors.add(list[i].Mark(), p, "duplicate endpoint " + key);
          continue;
        }
        u.endpoints.push_back(std::move(e));
      }
    }
  }
  f.duration("dns_refresh", u.dns_refresh_ms, false);
  f.string("balance", u.balance);
  if (u.balance != "round_robin" && u.balance != "least_request" && u.balance != "random")
    f.error("balance", "must be round_robin, least_request or random");
  f.duration("connect_timeout", u.connect_timeout_ms, false);
  f.size("max_response_header_bytes", u.max_response_header_bytes);
  if (u.max_response_header_bytes < 256 || u.max_response_header_bytes > (1u << 20))
    f.error("max_response_header_bytes", "must be between 256 and 1MiB");
  if (f.has("pool")) {
    YamlFields p(errors, f.node("pool"), f.path("pool"),
                 {"max_connections", "max_idle", "idle_timeout"});
    p.count("max_connections", u.pool.max_connections, 1, kMaxCount);
    p.count("max_idle", u.pool.max_idle, 0, kMaxCount);
    p.duration("idle_timeout", u.pool.idle_timeout_ms, false);
  }
  if (f.has("limits")) {
    YamlFields l(errors, f.node("limits"), f.path("limits"),
                 {"max_requests", "max_pending", "pending_timeout"});
    l.count("max_requests", u.limits.max_requests, 1, kMaxCount);
    l.count("max_pending", u.limits.max_pending, 0, kMaxCount);
    l.duration("pending_timeout", u.limits.pending_timeout_ms, false);
  }
  if (f.has("circuit_breaker")) read_circuit_breaker(f, u.circuit_breaker);
  if (f.has("health_check")) read_health_check(f, u.health_check);
  if (f.has("load_shedding")) {
    read_load_shedding(f, u.load_shedding);
  }
  if (f.has("protocol")) {
    std::string protocol;
    f.string("protocol", protocol);
    if (protocol == "h2")
      u.h2 = true;
    else if (protocol != "http1")
      f.error("protocol", "must be http1 or h2");
  }
  if (f.has("http2")) {
    if (!u.h2) f.error("http2", "http2 settings need protocol: h2");
    YamlFields h(errors, f.node("http2"), f.path("http2"),
                 {"max_concurrent_streams", "initial_window", "ping_interval", "ping_timeout"});
    h.count("max_concurrent_streams", u.h2_max_concurrent_streams, 1, 10000);
    h.size("initial_window", u.h2_initial_window);
    if (u.h2_initial_window < 1024 || u.h2_initial_window > 0x7fffffff)
      h.error("initial_window", "must be between 1KiB and 2GiB - 1");
    h.duration("ping_interval", u.h2_ping_interval_ms, true);
    h.duration("ping_timeout", u.h2_ping_timeout_ms, false);
  }
  if (f.has("tls")) read_upstream_tls(errors, f, u.h2, u.tls);
}

void read_root(ConfigErrors& errors, const YAML::Node& root, Config& c) {
  YamlFields f(errors, root, "",
               {"admin", "workers", "drain", "access_log", "redis", "listeners", "upstreams"});
  if (!f.ok()) return;
  if (f.has("admin")) {
    YamlFields a(errors, f.node("admin"), "admin", {"listen", "max_connections", "timeouts"});
    a.string("listen", c.admin_listen);
    a.count("max_connections", c.admin_max_connections, 1, 100'000);
    if (a.has("timeouts")) {
      YamlFields t(errors, a.node("timeouts"), a.path("timeouts"), {"header", "idle"});
      t.duration("header", c.admin_header_timeout_ms, false);
      t.duration("idle", c.admin_idle_timeout_ms, false);
    }
  }
  {
    std::string message;
    if (!parse_ip_address(c.admin_listen, c.admin_address, message)) {
      YAML::Node n = f.has("admin") ? f.node("admin")["listen"] : YAML::Node();
      errors.add(n.IsDefined() ? n.Mark() : f.mark(), "admin.listen", message);
    }
  }
  f.integer("workers", c.workers, 0, 256);
  if (c.workers == 0)
    c.workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (f.has("drain")) {
    YamlFields d(errors, f.node("drain"), "drain", {"delay", "timeout"});
    d.duration("delay", c.drain_delay_ms);
    d.duration("timeout", c.drain_timeout_ms);
  }
  if (f.has("access_log")) {
    YamlFields a(errors, f.node("access_log"), "access_log", {"path", "format"});
    a.string("path", c.access_log_path);
    a.string("format", c.access_log_format);
    if (c.access_log_format != "json") a.error("format", "must be json");
  }
  if (f.has("redis")) read_redis(f, c.redis);

  if (f.required("upstreams")) {
    YAML::Node list = f.node("upstreams");
    if (!list.IsSequence() || list.size() == 0) {
      f.error("upstreams", "expected a non-empty list of upstreams");
    } else {
      std::set<std::string> names;
      for (std::size_t i = 0; i < list.size(); ++i) {
        UpstreamConfig u;
        read_upstream(errors, list[i], indexed("upstreams", i), u);
        if (!u.name.empty() && !names.insert(u.name).second)
          errors.add(list[i]["name"].Mark(), indexed("upstreams", i) + ".name",
                     "duplicate upstream name '" + u.name + "'");
        c.upstreams.push_back(std::move(u));
      }
    }
  }
  if (f.required("listeners")) {
    YAML::Node list = f.node("listeners");
    if (!list.IsSequence() || list.size() == 0) {
      f.error("listeners", "expected a non-empty list of listeners");
    } else {
      std::set<std::string> names, addresses;
      for (std::size_t i = 0; i < list.size(); ++i) {
        ListenerConfig l;
        std::string p = indexed("listeners", i);
        read_listener(errors, list[i], p, l);
        if (!l.name.empty() && !names.insert(l.name).second)
          errors.add(list[i]["name"].Mark(), p + ".name",
                     "duplicate listener name '" + l.name + "'");
        if (l.address.valid() && l.address.port() != 0 &&
            !addresses.insert(l.address.to_string()).second)
          errors.add(list[i]["listen"].Mark(), p + ".listen",
                     "address " + l.address.to_string() + " is used by another listener");
        if (l.address.valid() && c.admin_address.valid() && l.address.port() != 0 &&
            l.address.to_string() == c.admin_address.to_string())
          errors.add(list[i]["listen"].Mark(), p + ".listen", "address is the admin listener's");
        for (std::size_t r = 0; r < l.routes.size(); ++r) {
          const auto& route = l.routes[r];
          if (route.rate_limit && route.rate_limit->scope == "global" && !f.has("redis"))
            errors.add(list[i]["routes"][r]["rate_limit"].Mark(),
                       p + ".routes[" + std::to_string(r) + "].rate_limit.scope",
                       "scope: global needs a top-level redis block");
          if (!route.upstream.empty() && !c.find_upstream(route.upstream))
            errors.add(list[i]["routes"][r]["upstream"].Mark(),
                       p + ".routes[" + std::to_string(r) + "].upstream",
                       "no upstream named '" + route.upstream + "'");
        }
        c.listeners.push_back(std::move(l));
      }
    }
  }
}

LoadResult finish(ConfigErrors& errors, Config config) {
  LoadResult result;
  config.marks = std::move(errors.marks());
  if (errors.empty())
    result.config = std::move(config);
  else
    result.errors = errors.lines();
  return result;
}

}  // namespace

const UpstreamConfig* Config::find_upstream(const std::string& name) const {
  for (const auto& u : upstreams)
    if (u.name == name) return &u;
  return nullptr;
}

SourceMark Config::mark_of(std::string path) const {
  for (;;) {
    auto it = marks.find(path);
    if (it != marks.end()) return it->second;
    auto cut = path.find_last_of(".[");
    if (cut == std::string::npos || cut == 0) return {};
    path.resize(cut);
  }
}

LoadResult load_config_string(const std::string& text, const std::string& name) {
  ConfigErrors errors(name);
  Config config;
  config.file = name;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    errors.add(e.mark, "", "YAML syntax error: " + e.msg);
    return finish(errors, std::move(config));
  }
  if (root.IsNull()) {  // only comments, or a lone "~"
    errors.add(root.Mark(), "",
               "the file has no settings (expected a mapping with at least listeners and "
               "upstreams)");
    return finish(errors, std::move(config));
  }
  try {
    read_root(errors, root, config);
  } catch (const YAML::Exception& e) {
    errors.add(e.mark, "", e.msg);
  }
  return finish(errors, std::move(config));
}

namespace {

// "No such file or directory (ENOENT)".
std::string errno_text(int error) {
  const char* name = strerrorname_np(error);
  return std::string(std::strerror(error)) + (name ? std::string(" (") + name + ")" : "");
}

}  // namespace

bool read_config_file(const std::string& path, std::string& text, std::string& error,
                      int* error_number) {
  text.clear();
  int why = 0;
  auto fail = [&](std::string message) {
    error = std::move(message);
    if (error_number) *error_number = why;
    return false;
  };
  // Non-blocking: a FIFO at the path must not hang the reader (it is refused below).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    why = errno;
    return fail("cannot open the file: " + errno_text(why));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    why = errno;
    ::close(fd);
    return fail("cannot read the file: " + errno_text(why));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    if (!S_ISDIR(st.st_mode)) return fail("not a regular file (a FIFO, device or socket)");
    why = EISDIR;
    return fail("cannot read the file: " + errno_text(why));
  }
  char buffer[16 * 1024];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      why = errno;
      ::close(fd);
      return fail("cannot read the file: " + errno_text(why));
    }
    if (n == 0) break;
    text.append(buffer, static_cast<std::size_t>(n));
    if (text.size() > kMaxConfigBytes) {
      ::close(fd);
      text.clear();
      return fail("the file is larger than 4 MiB; is it the right file?");
    }
  }
  ::close(fd);
  return true;
}

LoadResult load_config_file(const std::string& path, std::string* text_read) {
  LoadResult result;
  std::string text, error;
  bool ok = read_config_file(path, text, error);
  if (text_read) *text_read = text;
  if (!ok) {
    result.errors.push_back(path + ":0:0: (root): " + error);
    return result;
  }
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    result.errors.push_back(
        path + ":0:0: (root): the file is empty (expected a mapping with at least listeners and "
               "upstreams)");
    return result;
  }
  return load_config_string(text, path);
}

}  // namespace bulwark
