// bulwark-load: an open-loop HTTP/1.1 load generator (one thread, libuv + llhttp), for testing
// load shedding. Requests start on a fixed schedule -- request i at i/R seconds, started by a
// 1 ms timer tick that starts every request whose time has passed (and after every poll for
// I/O, which the tick triggers: responses free their connections first) -- whatever the
// responses do.
// Each request takes an idle keep-alive connection or opens a new one; when --max-conns
// connections are already open it is not sent and counts as "client-overflow". Latency is
// measured from the scheduled start (corrected for coordinated omission), so a lagging
// generator shows up as latency, never as a lower offered rate. Bodies of any size, with
// Content-Length, chunked or ending at EOF, are read and discarded.
//
// Usage: bulwark-load --url http://HOST:PORT/PATH --rate R --duration S
//          [--timeout-ms MS] [--max-conns N] [--header 'Name: value']...
//          [--mix critical=0.1,normal=0.5,sheddable=0.4] [--priority-header x-priority]
//          [--seed N] [--out FILE]
//   --rate R          requests per second, evenly spaced (float)
//   --duration S      seconds of schedule (float); the run then waits for what is in flight
//   --timeout-ms MS   per request, from its scheduled start (default 5000); on expiry the
//                     connection is closed (with RST) and the outcome is "timeout"
//   --max-conns N     connections open at once (default 2000)
//   --header H        an extra request header (repeatable); Host defaults to the URL's
//   --mix M           each request gets one priority drawn with these weights (PRNG seeded by
//                     --seed, default 1) and sent in --priority-header (default x-priority);
//                     without --mix no priority header is sent
//   --out FILE        CSV, a header line then one line per request in schedule order:
//                     sched_ms,latency_us,status,reason,priority
//                     status is 0 when no response came; reason is the x-bulwark-reason
//                     response header, or the client outcome (timeout, connect-error, reset,
//                     parse-error, client-overflow), empty for a plain response.
// stdout gets one JSON line at the end:
//   {"offered":..,"sent":..,"completed":..,"status":{"200":..,"0":..},"reasons":{..},
//    "p50_us":..,"p99_us":..,"priority":{"NAME":{"sent":..,"ok":..,"p50_us":..,"p99_us":..}},
//    "achieved_rate":..,"duration_s":..,"max_start_lag_us":..}
// offered = requests scheduled; sent = offered minus client-overflow; completed = responses
// received; percentiles are of 2xx latencies (null when none); "priority" has one entry per
// --mix name ("none" without --mix), its "sent" also without client-overflow;
// achieved_rate = responses completed within the scheduled duration / the duration;
// max_start_lag_us = how late the generator started a request (up to ~1 ms is the tick).
// Latencies include up to 1 ms of tick granularity (a request may wait for the next tick).
// SIGINT stops scheduling; what is in flight is awaited and the results are written.
#include <llhttp.h>
#include <netdb.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "results.h"

namespace {

struct Options {
  std::string url;
  double rate = 0, duration = 0;
  std::uint64_t timeout_ms = 5000;
  std::size_t max_conns = 2000;
  std::vector<std::string> headers;
  std::string mix, priority_header = "x-priority", out;
  std::uint64_t seed = 1;
};

struct Conn;

enum State : std::uint8_t { kPending, kActive, kDone };

struct Record : loadgen::Outcome {
  Conn* conn = nullptr;  // while active
  State state = kPending;
};

struct Conn {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  llhttp_t parser;
  std::int64_t req = -1;  // the request in flight on this connection
  bool connected = false, closing = false, want_close = false;
  std::size_t idle_pos = SIZE_MAX;  // index in g_idle while idle
  std::string field;                // header name being read
  bool in_reason = false;
  std::string reason;
};

Options g_opt;
uv_loop_t* g_loop;
uv_timer_t g_tick;
uv_idle_t g_poll_now;
uv_check_t g_check;
uv_signal_t g_sigint;
sockaddr_storage g_addr;
std::uint64_t g_start = 0;      // uv_hrtime() at the run start
std::uint64_t g_window_ns = 0;  // the scheduled duration
std::uint64_t g_timeout_ns = 0;
std::vector<Record> g_records;
std::uint64_t g_total = 0, g_next = 0;  // requests to schedule; next one to start
std::uint64_t g_active = 0, g_in_window = 0;
std::int64_t g_max_lag_ns = 0;
std::size_t g_open = 0;
std::vector<Conn*> g_idle;
std::deque<std::uint64_t> g_inflight;   // started requests, in start order (= deadline order)
std::vector<std::string> g_priorities;  // names; request text per priority below
std::vector<std::string> g_request_text;
std::vector<std::string> g_reasons{""};
std::unordered_map<std::string, std::uint16_t> g_reason_ids{{"", 0}};
llhttp_settings_t g_settings;
bool g_finished = false;

std::uint16_t reason_id(const std::string& r) {
  auto it = g_reason_ids.find(r);
  if (it != g_reason_ids.end()) return it->second;
  if (g_reasons.size() >= 65535) return 0;
  auto id = static_cast<std::uint16_t>(g_reasons.size());
  g_reasons.push_back(r);
  g_reason_ids.emplace(r, id);
  return id;
}

std::uint64_t sched_ns(std::uint64_t i) {
  return static_cast<std::uint64_t>(std::llround(static_cast<double>(i) * 1e9 / g_opt.rate));
}

std::uint64_t now_ns() { return uv_hrtime() - g_start; }

void finish(std::uint64_t i, int status, std::uint16_t reason) {
  Record& r = g_records[i];
  if (r.state != kActive) return;
  std::uint64_t now = now_ns();
  r.state = kDone;
  r.status = static_cast<std::uint16_t>(status);
  r.reason = reason;
  r.conn = nullptr;
  r.latency_us = static_cast<std::int64_t>(now - sched_ns(i)) / 1000;
  --g_active;
  if (status != 0 && now <= g_window_ns) ++g_in_window;
}

void idle_remove(Conn* c) {
  if (c->idle_pos == SIZE_MAX) return;
  Conn* last = g_idle.back();
  g_idle[c->idle_pos] = last;
  last->idle_pos = c->idle_pos;
  g_idle.pop_back();
  c->idle_pos = SIZE_MAX;
}

void conn_close(Conn* c, const char* outcome, bool abort = false) {
  if (c->closing) return;
  c->closing = true;
  idle_remove(c);
  if (c->req >= 0) finish(static_cast<std::uint64_t>(c->req), 0, reason_id(outcome));
  c->req = -1;
  --g_open;
  if (abort && c->connected) {
    struct linger l = {1, 0};
    uv_os_fd_t fd;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->tcp), &fd) == 0)
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
           [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
}

void on_write(uv_write_t* w, int status) {
  auto* c = static_cast<Conn*>(w->data);
  delete w;  // before the connection: libuv calls write callbacks before the close callback
  if (status < 0 && !c->closing) conn_close(c, "reset");
}

void send_request(Conn* c) {
  const std::string& text = g_request_text[g_records[static_cast<std::size_t>(c->req)].priority];
  uv_buf_t b = uv_buf_init(const_cast<char*>(text.data()), static_cast<unsigned>(text.size()));
  int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1);
  if (n == static_cast<int>(text.size())) return;
  if (n < 0 && n != UV_EAGAIN) {
    conn_close(c, "reset");
    return;
  }
  if (n > 0) b = uv_buf_init(b.base + n, b.len - static_cast<unsigned>(n));
  // Rare (the request is small): the rest goes out when the socket takes it. A request of its
  // own, as an early response may make the connection idle again before this write is done.
  auto* w = new uv_write_t;
  w->data = c;
  if (uv_write(w, reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1, on_write) != 0) {
    delete w;
    conn_close(c, "reset");
  }
}

// --- response parsing ----------------------------------------------------------------

int cb_message_begin(llhttp_t* p) {
  auto* c = static_cast<Conn*>(p->data);
  c->field.clear();
  c->reason.clear();
  c->in_reason = false;
  return 0;
}
int cb_field(llhttp_t* p, const char* at, std::size_t n) {
  static_cast<Conn*>(p->data)->field.append(at, n);
  return 0;
}
int cb_field_complete(llhttp_t* p) {
  auto* c = static_cast<Conn*>(p->data);
  c->in_reason = strcasecmp(c->field.c_str(), "x-bulwark-reason") == 0;
  c->field.clear();
  return 0;
}
int cb_value(llhttp_t* p, const char* at, std::size_t n) {
  auto* c = static_cast<Conn*>(p->data);
  if (c->in_reason) c->reason.append(at, n);
  return 0;
}
int cb_value_complete(llhttp_t* p) {
  static_cast<Conn*>(p->data)->in_reason = false;
  return 0;
}
int cb_message_complete(llhttp_t* p) {
  auto* c = static_cast<Conn*>(p->data);
  int status = p->status_code;
  if (status >= 100 && status < 200 && status != 101) return 0;  // interim response
  if (c->req < 0) {
    c->want_close = true;  // a response nobody asked for
    return 0;
  }
  finish(static_cast<std::uint64_t>(c->req), status, reason_id(c->reason));
  c->req = -1;
  if (!llhttp_should_keep_alive(p) || status == 101) c->want_close = true;
  return 0;
}

void on_alloc(uv_handle_t*, std::size_t, uv_buf_t* buf) {
  static char b[65536];
  buf->base = b;
  buf->len = sizeof b;
}

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* c = static_cast<Conn*>(s->data);
  if (c->closing) return;
  if (n < 0) {
    if (n == UV_EOF && c->req >= 0) llhttp_finish(&c->parser);  // a body that ends at EOF
    conn_close(c, "reset");
    return;
  }
  if (n == 0) return;
  llhttp_errno_t err = llhttp_execute(&c->parser, buf->base, static_cast<std::size_t>(n));
  if (err != HPE_OK) {
    conn_close(c, "parse-error");
    return;
  }
  if (c->want_close) {
    conn_close(c, "reset");
    return;
  }
  if (c->req < 0 && c->idle_pos == SIZE_MAX) {
    c->idle_pos = g_idle.size();
    g_idle.push_back(c);
  }
}

void on_connect(uv_connect_t* req, int status) {
  auto* c = static_cast<Conn*>(req->data);
  if (c->closing) return;
  if (status < 0) {
    conn_close(c, "connect-error");
    return;
  }
  c->connected = true;
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
  if (c->req >= 0) send_request(c);
}

Conn* open_conn() {
  auto* c = new Conn;
  uv_tcp_init(g_loop, &c->tcp);
  c->tcp.data = c;
  c->connect_req.data = c;
  llhttp_init(&c->parser, HTTP_RESPONSE, &g_settings);
  c->parser.data = c;
  ++g_open;
  int rc =
      uv_tcp_connect(&c->connect_req, &c->tcp, reinterpret_cast<sockaddr*>(&g_addr), on_connect);
  if (rc != 0) {
    conn_close(c, "connect-error");  // no request attached yet
    return nullptr;
  }
  return c;
}

// --- schedule ------------------------------------------------------------------------

void start_request(std::uint64_t i, std::uint64_t now) {
  Record& r = g_records[i];
  auto lag = static_cast<std::int64_t>(now - sched_ns(i));
  if (lag > g_max_lag_ns) g_max_lag_ns = lag;
  Conn* c = nullptr;
  if (!g_idle.empty()) {
    c = g_idle.back();
    g_idle.pop_back();
    c->idle_pos = SIZE_MAX;
  } else if (g_open < g_opt.max_conns) {
    c = open_conn();
  } else {
    r.state = kDone;
    r.reason = reason_id("client-overflow");
    return;
  }
  r.state = kActive;
  ++g_active;
  if (c == nullptr) {  // uv_tcp_connect refused at once
    finish(i, 0, reason_id("connect-error"));
    return;
  }
  r.conn = c;
  c->req = static_cast<std::int64_t>(i);
  g_inflight.push_back(i);
  if (c->connected) send_request(c);
}

void write_results();

// Starts every request whose time has passed and expires the overdue ones. Runs after each
// poll for I/O (a uv_check handle), so responses already received free their connections
// first; the 1 ms tick makes that poll return at once.
void run_schedule() {
  std::uint64_t now = now_ns();
  while (g_next < g_total && sched_ns(g_next) <= now) start_request(g_next++, now);
  while (!g_inflight.empty()) {
    std::uint64_t i = g_inflight.front();
    Record& r = g_records[i];
    if (r.state == kActive) {
      if (sched_ns(i) + g_timeout_ns > now) break;
      Conn* c = r.conn;
      finish(i, 0, reason_id("timeout"));
      c->req = -1;
      conn_close(c, "timeout", true);
    }
    g_inflight.pop_front();
  }
  if (g_next >= g_total && g_active == 0 && !g_finished) {
    g_finished = true;
    write_results();
    uv_stop(g_loop);
  }
}

void on_tick(uv_timer_t*) {
  uv_idle_start(&g_poll_now, [](uv_idle_t*) {});  // the next poll does not block
}

void on_check(uv_check_t*) {
  uv_idle_stop(&g_poll_now);
  run_schedule();
}

void on_sigint(uv_signal_t*, int) {
  if (g_total > g_next) {
    std::fprintf(stderr, "bulwark-load: interrupted; waiting for %llu requests in flight\n",
                 static_cast<unsigned long long>(g_active));
    g_total = g_next;
    std::uint64_t now = now_ns();
    if (now < g_window_ns) g_window_ns = now;
  } else {
    std::exit(130);
  }
}

// --- results (results.cc writes them) -------------------------------------------------

void write_results() {
  loadgen::Report r;
  r.offered = g_total;
  r.outcome = [](std::uint64_t i) -> const loadgen::Outcome& { return g_records[i]; };
  r.sched_ms = [](std::uint64_t i) { return static_cast<double>(sched_ns(i)) / 1e6; };
  r.reasons = &g_reasons;
  r.priorities = &g_priorities;
  r.with_priority = !g_opt.mix.empty();
  r.overflow_reason = reason_id("client-overflow");
  r.csv_path = g_opt.out;
  r.window_ns = g_window_ns;
  r.in_window = g_in_window;
  r.max_lag_ns = g_max_lag_ns;
  loadgen::write_results(r);
}

}  // namespace

namespace {

[[noreturn]] void usage(const char* why) {
  if (why) std::fprintf(stderr, "bulwark-load: %s\n", why);
  std::fprintf(stderr,
               "usage: bulwark-load --url http://HOST:PORT/PATH --rate R --duration S\n"
               "         [--timeout-ms MS] [--max-conns N] [--header 'Name: value']...\n"
               "         [--mix NAME=W,...] [--priority-header NAME] [--seed N] [--out FILE]\n");
  std::exit(2);
}

bool parse_double(const char* s, double& out) {
  char* end = nullptr;
  out = std::strtod(s, &end);
  return end != s && *end == '\0' && std::isfinite(out);
}

bool parse_uint(const char* s, std::uint64_t& out) {
  if (*s < '0' || *s > '9') return false;
  char* end = nullptr;
  out = std::strtoull(s, &end, 10);
  return *end == '\0';
}

// http://HOST[:PORT][/PATH]; HOST may be [v6]. Fills g_addr; returns the authority for Host.
std::string parse_url(const std::string& url, std::string& path) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) usage("--url must start with http://");
  std::string rest = url.substr(scheme.size());
  auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  path = slash == std::string::npos ? "/" : rest.substr(slash);
  std::string host = authority, port = "80";
  if (!authority.empty() && authority[0] == '[') {
    auto close = authority.find(']');
    if (close == std::string::npos) usage("bad --url host");
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':')
      port = authority.substr(close + 2);
  } else if (auto colon = authority.rfind(':'); colon != std::string::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) usage("bad --url host");
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    std::fprintf(stderr, "bulwark-load: cannot resolve %s:%s: %s\n", host.c_str(), port.c_str(),
                 gai_strerror(rc));
    std::exit(2);
  }
  std::memcpy(&g_addr, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return authority;
}

std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") usage(nullptr);
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    std::uint64_t n = 0;
    if (a == "--url") {
      g_opt.url = v;
    } else if (a == "--rate") {
      if (!parse_double(v, g_opt.rate) || g_opt.rate <= 0) usage("--rate takes a number > 0");
    } else if (a == "--duration") {
      if (!parse_double(v, g_opt.duration) || g_opt.duration <= 0)
        usage("--duration takes seconds > 0");
    } else if (a == "--timeout-ms") {
      if (!parse_uint(v, g_opt.timeout_ms) || g_opt.timeout_ms == 0)
        usage("--timeout-ms takes milliseconds > 0");
    } else if (a == "--max-conns") {
      if (!parse_uint(v, n) || n == 0) usage("--max-conns takes a number > 0");
      g_opt.max_conns = static_cast<std::size_t>(n);
    } else if (a == "--header") {
      std::string h = v;
      auto colon = h.find(':');
      if (colon == std::string::npos || colon == 0) usage("--header takes 'Name: value'");
      g_opt.headers.push_back(h);
    } else if (a == "--mix") {
      g_opt.mix = v;
    } else if (a == "--priority-header") {
      g_opt.priority_header = v;
    } else if (a == "--seed") {
      if (!parse_uint(v, g_opt.seed)) usage("--seed takes a number");
    } else if (a == "--out") {
      g_opt.out = v;
    } else {
      usage(("unknown argument " + a).c_str());
    }
  }
  if (g_opt.url.empty() || g_opt.rate <= 0 || g_opt.duration <= 0)
    usage("--url, --rate and --duration are required");
  if (g_opt.rate * g_opt.duration > 50e6)
    usage("more than 50 million requests: lower --rate or --duration");

  std::string path;
  std::string authority = parse_url(g_opt.url, path);

  // Priorities and their cumulative weights.
  std::vector<double> cumulative;
  if (g_opt.mix.empty()) {
    g_priorities.push_back("none");
    cumulative.push_back(1.0);
  } else {
    double sum = 0;
    std::size_t at = 0;
    while (at <= g_opt.mix.size()) {
      auto comma = g_opt.mix.find(',', at);
      std::string item =
          g_opt.mix.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
      auto eq = item.find('=');
      double w = 0;
      if (eq == std::string::npos || eq == 0 || !parse_double(item.c_str() + eq + 1, w) || w < 0)
        usage("--mix takes NAME=WEIGHT,...");
      g_priorities.push_back(item.substr(0, eq));
      sum += w;
      cumulative.push_back(sum);
      if (comma == std::string::npos) break;
      at = comma + 1;
    }
    if (sum <= 0 || g_priorities.size() > 255) usage("--mix needs 1..255 names and a weight > 0");
    for (double& c : cumulative) c /= sum;
  }

  // The request text, one per priority.
  bool has_host = false;
  std::string fixed;
  for (auto& h : g_opt.headers) {
    if (strncasecmp(h.c_str(), "host:", 5) == 0) has_host = true;
    fixed += h + "\r\n";
  }
  for (auto& name : g_priorities) {
    std::string t = "GET " + path + " HTTP/1.1\r\n";
    if (!has_host) t += "Host: " + authority + "\r\n";
    t += fixed;
    if (!g_opt.mix.empty()) t += g_opt.priority_header + ": " + name + "\r\n";
    g_request_text.push_back(t + "\r\n");
  }

  g_total = static_cast<std::uint64_t>(std::ceil(g_opt.rate * g_opt.duration - 1e-9));
  g_records.resize(g_total);
  std::uint64_t state = g_opt.seed;
  if (!g_opt.mix.empty()) {
    for (auto& r : g_records) {
      double u = static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53;
      std::size_t p = 0;
      while (p + 1 < cumulative.size() && u >= cumulative[p]) ++p;
      r.priority = static_cast<std::uint8_t>(p);
    }
  }
  g_window_ns = static_cast<std::uint64_t>(g_opt.duration * 1e9);
  g_timeout_ns = g_opt.timeout_ms * 1'000'000ull;

  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  signal(SIGPIPE, SIG_IGN);

  llhttp_settings_init(&g_settings);
  g_settings.on_message_begin = cb_message_begin;
  g_settings.on_header_field = cb_field;
  g_settings.on_header_field_complete = cb_field_complete;
  g_settings.on_header_value = cb_value;
  g_settings.on_header_value_complete = cb_value_complete;
  g_settings.on_message_complete = cb_message_complete;

  g_loop = uv_default_loop();
  uv_signal_init(g_loop, &g_sigint);
  uv_signal_start(&g_sigint, on_sigint, SIGINT);
  uv_unref(reinterpret_cast<uv_handle_t*>(&g_sigint));
  uv_timer_init(g_loop, &g_tick);
  uv_idle_init(g_loop, &g_poll_now);
  uv_check_init(g_loop, &g_check);
  g_start = uv_hrtime();
  run_schedule();  // request 0 is due now
  uv_check_start(&g_check, on_check);
  uv_timer_start(&g_tick, on_tick, 1, 1);
  uv_run(g_loop, UV_RUN_DEFAULT);
  return 0;
}
