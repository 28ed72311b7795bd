#include "upstream/health.h"

#include <llhttp.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "core/log.h"
#include "net/listener.h"
#include "net/tls.h"
#include "net/write_queue.h"

namespace bulwark {

bool HealthTracker::record(bool success) {
  EndpointHealth before = state_;
  if (success) {
    failures_ = 0;
    ++successes_;
    // The first success makes an endpoint of unknown health healthy; a down one needs
    // healthy_threshold in a row.
    if (state_ == EndpointHealth::unknown ||
        (state_ == EndpointHealth::unhealthy && successes_ >= healthy_threshold_))
      state_ = EndpointHealth::healthy;
  } else {
    successes_ = 0;
    ++failures_;
    if (state_ != EndpointHealth::unhealthy && failures_ >= unhealthy_threshold_)
      state_ = EndpointHealth::unhealthy;
  }
  return state_ != before;
}

std::uint64_t jittered_interval(std::uint64_t interval_ms, double jitter, double random01) {
  double factor = 1.0 + jitter * (2.0 * random01 - 1.0);
  return static_cast<std::uint64_t>(std::llround(static_cast<double>(interval_ms) * factor));
}

bool status_expected(const HealthCheckConfig& config, int status) {
  for (const auto& r : config.expected_status)
    if (status >= r.low && status <= r.high) return true;
  return false;
}

namespace {
// One probe connection; freed in its close callback.
struct ProbeConn {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  llhttp_t parser;
  HealthChecker::Probe* probe = nullptr;  // null once the probe has moved on
  std::unique_ptr<TlsSession> tls;        // an upstream with a tls block: HTTP over TLS
  char buffer[2048];
  int status = 0;
};

void free_write(uv_write_t* req, int) { free_queued_write(req); }
}  // namespace

struct HealthChecker::Probe {
  HealthChecker* owner;
  UpstreamState* upstream;
  std::shared_ptr<EndpointState> endpoint;
  const HealthCheckConfig& config;
  HealthTracker tracker;
  uv_timer_t* interval_timer;
  uv_timer_t* timeout_timer;
  ProbeConn* conn = nullptr;
  std::string request;
  std::uint64_t started_ms = 0;  // loop time the current check started

  Probe(HealthChecker* o, UpstreamState* u, std::shared_ptr<EndpointState> e)
      : owner(o),
        upstream(u),
        endpoint(std::move(e)),
        config(*u->config().health_check),
        tracker(config.healthy_threshold, config.unhealthy_threshold),
        interval_timer(new uv_timer_t),
        timeout_timer(new uv_timer_t) {
    uv_timer_init(owner->loop_, interval_timer);
    uv_timer_init(owner->loop_, timeout_timer);
    interval_timer->data = this;
    timeout_timer->data = this;
    // Over TLS the Host is the TLS server name (a virtual host behind one address answers
    // for its name, not for ip:port).
    std::string host = endpoint->name;
    if (const auto& tls = u->config().tls) {
      host = tls->sni.empty() ? endpoint->host : tls->sni;
      if (host.find(':') != std::string::npos) {  // an IPv6 address
        host.insert(host.begin(), '[');
        host.push_back(']');
      }
      host.push_back(':');
      host.append(std::to_string(endpoint->address.port()));
    }
    request = "GET " + config.path + " HTTP/1.1\r\nHost: " + host +
              "\r\nUser-Agent: bulwark-health/" BULWARK_VERSION "\r\nConnection: close\r\n\r\n";
  }

  ~Probe() {
    drop_conn();
    for (uv_timer_t* t : {interval_timer, timeout_timer})
      uv_close(reinterpret_cast<uv_handle_t*>(t),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }

  void schedule(std::uint64_t delay_ms) {
    uv_timer_start(
        interval_timer, [](uv_timer_t* t) { static_cast<Probe*>(t->data)->start(); }, delay_ms, 0);
  }

  void drop_conn() {
    if (!conn) return;
    conn->probe = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&conn->tcp),
             [](uv_handle_t* h) { delete reinterpret_cast<ProbeConn*>(h->data); });
    conn = nullptr;
  }

  void start() {
    started_ms = uv_now(owner->loop_);
    conn = new ProbeConn();
    conn->probe = this;
    uv_tcp_init(owner->loop_, &conn->tcp);
    conn->tcp.data = conn;
    uv_timer_start(
        timeout_timer,
        [](uv_timer_t* t) { static_cast<Probe*>(t->data)->finish(HealthResult::timeout); },
        config.timeout_ms, 0);
    int rc =
        uv_tcp_connect(&conn->connect, &conn->tcp, endpoint->address.sockaddr_ptr(), on_connect);
    if (rc != 0 && out_of_local_resources(rc)) {
      // Bulwark is out of descriptors: no verdict on the endpoint; try again next interval.
      static LogThrottle throttle;
      throttle.log(LogLevel::warn,
                   "health check of " + endpoint->name + " skipped: out of file descriptors");
      uv_timer_stop(timeout_timer);
      drop_conn();
      schedule(config.interval_ms);
      return;
    }
    if (rc != 0) finish(HealthResult::failure);
  }

  static void on_connect(uv_connect_t* req, int status) {
    auto* c = static_cast<ProbeConn*>(req->handle->data);
    Probe* p = c->probe;
    if (!p) return;
    if (status < 0) return p->finish(HealthResult::failure);
    if (p->config.type == "tcp") return p->finish(HealthResult::success);
    static const llhttp_settings_t settings = [] {
      llhttp_settings_t s;
      llhttp_settings_init(&s);
      s.on_headers_complete = [](llhttp_t* parser) -> int {
        static_cast<ProbeConn*>(parser->data)->status = parser->status_code;
        return HPE_PAUSED;  // the status is all a probe needs
      };
      return s;
    }();
    llhttp_init(&c->parser, HTTP_RESPONSE, &settings);
    c->parser.data = c;
    auto* stream = reinterpret_cast<uv_stream_t*>(&c->tcp);
    if (p->upstream->config().tls) {
      // The same handshake as a pooled connection's (trust, name, client certificate); the
      // request goes once it is done (tls_input).
      const TlsClientContext* context = p->upstream->tls();
      c->tls = std::make_unique<TlsSession>();
      const std::string& sni = context && !context->config().sni.empty() ? context->config().sni
                                                                         : p->endpoint->host;
      if (!context || !c->tls->start_client(*context, sni, nullptr, nullptr))
        return p->finish(HealthResult::failure);
      if (c->tls->handshake() == TlsSession::Result::error ||
          send_tls_output(*c->tls, stream, free_write) != 0)
        return p->finish(HealthResult::failure);
    } else {
      uv_buf_t buf = uv_buf_init(p->request.data(), static_cast<unsigned>(p->request.size()));
      if (uv_write(&c->write, stream, &buf, 1, [](uv_write_t*, int) {}) != 0)
        return p->finish(HealthResult::failure);
    }
    int rc = uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->tcp),
        [](uv_handle_t* h, std::size_t, uv_buf_t* b) {
          auto* cc = static_cast<ProbeConn*>(h->data);
          *b = uv_buf_init(cc->buffer, sizeof cc->buffer);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
          auto* cc = static_cast<ProbeConn*>(s->data);
          Probe* pp = cc->probe;
          if (!pp) return;
          if (n < 0) return pp->finish(HealthResult::failure);
          llhttp_errno_t err = HPE_OK;
          if (cc->tls) {
            if (!pp->tls_input(cc, b->base, static_cast<std::size_t>(n), err)) return;
          } else {
            err = llhttp_execute(&cc->parser, b->base, static_cast<std::size_t>(n));
          }
          if (cc->status) {
            pp->finish(status_expected(pp->config, cc->status) ? HealthResult::success
                                                               : HealthResult::failure);
          } else if (err != HPE_OK) {
            pp->finish(HealthResult::failure);
          }
        });
    if (rc != 0) p->finish(HealthResult::failure);
  }

  // Ciphertext read by a TLS probe: the handshake, then the request, then the response's
  // plaintext to llhttp (`err`). False when the probe finished (failed) here.
  bool tls_input(ProbeConn* c, const char* data, std::size_t len, llhttp_errno_t& err) {
    auto* stream = reinterpret_cast<uv_stream_t*>(&c->tcp);
    c->tls->feed(data, len);
    if (!c->tls->handshake_done()) {
      TlsSession::Result r = c->tls->handshake();
      if (r == TlsSession::Result::error || send_tls_output(*c->tls, stream, free_write) != 0) {
        finish(HealthResult::failure);
        return false;
      }
      if (r != TlsSession::Result::done) return true;
      if (!c->tls->write(request.data(), request.size()) ||
          send_tls_output(*c->tls, stream, free_write) != 0) {
        finish(HealthResult::failure);
        return false;
      }
    }
    for (;;) {
      TlsSession::Result r;
      std::size_t n = c->tls->read(c->buffer, sizeof c->buffer, r);
      if (n > 0) {
        err = llhttp_execute(&c->parser, c->buffer, n);
        if (c->status || err != HPE_OK) return true;
        continue;
      }
      if (r == TlsSession::Result::want) return true;
      finish(HealthResult::failure);  // closed before a status line, or a TLS error
      return false;
    }
  }

  void finish(HealthResult result) {
    uv_timer_stop(timeout_timer);
    drop_conn();
    endpoint->health_checks[static_cast<int>(result)].add();
    EndpointHealth before = tracker.state();
    // A breaker opened before this check started may probe now rather than at open_until.
    if (result == HealthResult::success && endpoint->breaker &&
        endpoint->breaker->health_check_passed(started_ms, uv_now(owner->loop_)))
      log_info("upstream " + upstream->config().name + " endpoint " + endpoint->name +
               ": health check passed; circuit open period ends early (half-open next)");
    if (tracker.record(result == HealthResult::success)) {
      EndpointHealth now = tracker.state();
      endpoint->health.store(static_cast<int>(now), std::memory_order_relaxed);
      std::string line = "upstream " + upstream->config().name + " endpoint " + endpoint->name +
                         ": health " + health_name(before) + " -> " + health_name(now);
      if (now == EndpointHealth::unhealthy) {
        log_warn(line);
        upstream->notify_health_change();  // workers close its idle pooled connections
      } else {
        log_info(line);
      }
    }
    schedule(jittered_interval(config.interval_ms, config.jitter,
                               std::uniform_real_distribution<double>(0.0, 1.0)(owner->rng_)));
  }
};

HealthChecker::HealthChecker(uv_loop_t* loop, std::vector<UpstreamState*> upstreams)
    : loop_(loop), upstreams_(std::move(upstreams)), rng_(std::random_device{}()) {}

HealthChecker::~HealthChecker() { close(); }

void HealthChecker::sync() {
  if (closed_) return;
  std::vector<std::unique_ptr<Probe>> next;
  for (UpstreamState* u : upstreams_) {
    if (!u->config().health_check) continue;
    auto endpoints = u->endpoints();
    for (const auto& e : *endpoints) {
      std::unique_ptr<Probe> probe;
      for (auto& p : probes_)
        if (p && p->endpoint == e) probe = std::move(p);
      if (!probe) {
        probe = std::make_unique<Probe>(this, u, e);
        // New endpoints are probed at once (spread a little so many do not start together).
        probe->schedule(
            static_cast<std::uint64_t>(std::uniform_real_distribution<double>(0.0, 50.0)(rng_)));
      }
      next.push_back(std::move(probe));
    }
  }
  probes_ = std::move(next);  // probes of removed endpoints are destroyed: they stop
}

bool HealthChecker::probing(const EndpointState* endpoint) const {
  for (const auto& p : probes_)
    if (p->endpoint.get() == endpoint) return true;
  return false;
}

void HealthChecker::close() {
  if (closed_) return;
  closed_ = true;
  probes_.clear();
}

}  // namespace bulwark
