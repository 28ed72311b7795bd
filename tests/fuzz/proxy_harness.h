// An in-process proxy for the fuzz targets that feed bytes to a client connection
// (fuzz_request) or from an upstream (fuzz_response). As tests/unit/pipeline/proxy_fixture.h
// does, a Worker is built but not started and its loop is turned here; one listener routes
// everything to the upstream "app", whose one endpoint is a small backend on the same loop
// (127.0.0.1, ephemeral port). The client side is a socketpair: one end becomes a
// ClientConnection exactly as Worker::serve() makes one, the other is the fuzzer's client.
// Only UV_RUN_NOWAIT turns: nothing waits on the clock, and after each input every
// connection is closed and the pools emptied, so inputs do not leak state into each other.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <csignal>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "admin/access_log.h"
#include "admin/stats.h"
#include "config/config.h"
#include "core/log.h"
#include "fuzz_check.h"
#include "generation.h"
#include "net/address.h"
#include "pipeline/client_connection.h"
#include "upstream/pool.h"
#include "upstream/upstream.h"
#include "upstream/upstream_state.h"
#include "worker.h"

namespace bulwark::fuzz {

// The backend: records what each accepted connection receives and hands it to `on_data`,
// which may answer through write().
class Backend {
 public:
  struct Conn {
    Backend* owner = nullptr;
    uv_tcp_t tcp{};
    std::string received;
    bool closed = false;
    void write(const std::string& bytes) {
      if (closed || bytes.empty()) return;
      uv_buf_t b = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
      int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp), &b, 1);
      (void)n;  // a short write only truncates what the proxy reads
    }
    void close() {
      if (closed) return;
      closed = true;
      uv_close(reinterpret_cast<uv_handle_t*>(&tcp), [](uv_handle_t* h) {
        auto* c = static_cast<Conn*>(h->data);
        c->owner->open_ -= 1;
      });
    }
  };

  explicit Backend(uv_loop_t* loop) : loop_(loop) {
    uv_tcp_init(loop_, &server_);
    server_.data = this;
    sockaddr_in sa{};
    uv_ip4_addr("127.0.0.1", 0, &sa);
    FUZZ_CHECK(uv_tcp_bind(&server_, reinterpret_cast<const sockaddr*>(&sa), 0) == 0, "bind");
    FUZZ_CHECK(uv_listen(reinterpret_cast<uv_stream_t*>(&server_), 64, on_connection) == 0, "listen");
    sockaddr_storage bound{};
    int len = sizeof bound;
    uv_tcp_getsockname(&server_, reinterpret_cast<sockaddr*>(&bound), &len);
    port_ = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }

  Address address() const {
    Address a;
    std::string error;
    FUZZ_CHECK(parse_ip_address("127.0.0.1:" + std::to_string(port_), a, error), "address");
    return a;
  }
  // Closes every connection; they are forgotten once closed (run the loop).
  void close_all() {
    for (auto& c : conns_) c->close();
  }
  bool all_closed() const { return open_ == 0; }
  void forget_closed() {
    if (open_ == 0) conns_.clear();
  }
  std::vector<std::unique_ptr<Conn>>& conns() { return conns_; }

  std::function<void(Conn&)> on_data;
  std::uint64_t bytes_read = 0;  // by all connections (progress, for the harness)

 private:
  static void on_connection(uv_stream_t* server, int status) {
    auto* self = static_cast<Backend*>(server->data);
    if (status < 0) return;
    auto c = std::make_unique<Conn>();
    c->owner = self;
    uv_tcp_init(self->loop_, &c->tcp);
    c->tcp.data = c.get();
    self->open_ += 1;
    if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
      c->close();
    } else {
      uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
    }
    self->conns_.push_back(std::move(c));
  }
  static void on_alloc(uv_handle_t*, std::size_t, uv_buf_t* buf) {
    static char scratch[64 * 1024];
    *buf = uv_buf_init(scratch, sizeof scratch);
  }
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* c = static_cast<Conn*>(s->data);
    if (n < 0) {
      c->close();
      return;
    }
    c->received.append(buf->base, static_cast<std::size_t>(n));
    c->owner->bytes_read += static_cast<std::uint64_t>(n);
    if (c->owner->on_data) c->owner->on_data(*c);
  }

  uv_loop_t* loop_;
  uv_tcp_t server_{};
  int port_ = 0;
  int open_ = 0;
  std::vector<std::unique_ptr<Conn>> conns_;
};

class ProxyHarness {
 public:
  explicit ProxyHarness(const std::function<void(Config&)>& tweak = {}) {
    std::signal(SIGPIPE, SIG_IGN);
    set_log_level(LogLevel::error);
    ListenerConfig l;
    l.name = "main";
    l.listen = "127.0.0.1:0";
    l.max_header_bytes = 4096;  // small limits, so the fuzzer reaches them
    l.max_headers = 16;
    l.max_body_bytes = 2048;
    RouteConfig r;
    r.name = "all";
    r.upstream = "app";
    l.routes.push_back(r);
    config.listeners.push_back(l);
    UpstreamConfig u;
    u.name = "app";
    u.max_response_header_bytes = 2048;
    config.upstreams.push_back(u);
    config.access_log_path = "off";
    if (tweak) tweak(config);

    std::string error;
    sink = AccessLogSink::open("off", error);
    FUZZ_CHECK(sink != nullptr, "access log sink: %s", error.c_str());
    stats = std::make_unique<WorkerStats>();
    registry = std::make_unique<StatsRegistry>(1);
    generation = build_generation(std::make_shared<const Config>(config), nullptr, *registry);
    upstream_state = generation->upstreams[0];
    worker = std::make_unique<Worker>(0, generation, *stats, *sink, std::vector<int>{}, nullptr);
    loop = worker->loop();
    set_upstream_read_buffer(worker->read_buffer());
    TurnWrites::set_current(&worker->turn_writes());  // as Worker::run() does
    backend = std::make_unique<Backend>(loop);
    upstream_state->set_endpoints(merge_endpoints(*upstream_state->endpoints(),
                                                  {backend->address()}, config.upstreams[0], 1));
    worker->upstream(0).refresh_endpoints();
    worker->listener(0).open = true;
  }

  ListenerRuntime& listener() { return worker->listener(0); }

  void turn() {
    uv_run(loop, UV_RUN_NOWAIT);
    worker->between_turns();
  }

  // Serves one client connection whose client sends `request` (then, when `half_close`,
  // shuts down its sending side). Returns what the client received. Everything is closed
  // before it returns.
  std::string serve(const std::string& request, bool half_close) {
    int sv[2];
    FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
               "socketpair");
    int size = 1 << 20;
    ::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    std::size_t sent = 0;
    std::string received;
    auto pump = [&] {
      while (sent < request.size()) {
        ssize_t n = ::send(sv[0], request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<std::size_t>(n);
      }
      if (sent == request.size() && half_close && sv[0] >= 0) {
        ::shutdown(sv[0], SHUT_WR);
        half_close = false;
      }
      char buf[16384];
      for (;;) {
        ssize_t n = ::recv(sv[0], buf, sizeof buf, 0);
        if (n <= 0) break;
        received.append(buf, static_cast<std::size_t>(n));
      }
    };
    pump();
    std::uint64_t before = listener().connections;
    auto* d = new ClientConnection(listener());
    worker->add_downstream(d);
    if (d->open(sv[1])) {
      // Until the connection closes, or nothing has moved for a while: every step of the
      // path (client -> proxy -> upstream connect -> backend -> proxy -> client) completes
      // within a turn or two on a local socket, so 16 quiet turns mean it waits for the client.
      int quiet = 0;
      for (int i = 0; i < 400 && quiet < 16 && listener().connections > before; ++i) {
        std::size_t got = received.size(), was_sent = sent;
        std::uint64_t backend_bytes = backend->bytes_read;
        turn();
        pump();
        bool moved = received.size() != got || sent != was_sent || backend->bytes_read != backend_bytes;
        quiet = moved ? 0 : quiet + 1;
      }
    }
    if (std::getenv("BULWARK_FUZZ_DEBUG"))
      std::fprintf(stderr, "served: %zu bytes sent, %zu received, backend read %llu, open %llu\n%s\n",
                   sent, received.size(), static_cast<unsigned long long>(backend->bytes_read),
                   static_cast<unsigned long long>(listener().connections - before),
                   received.substr(0, 300).c_str());
    // The client hangs up; the connection must close.
    ::close(sv[0]);
    for (int i = 0; i < 200 && listener().connections > before; ++i) turn();
    // A response that is waiting for the upstream (a close-delimited body, say) sees the
    // client gone only when it writes again or a timer fires, and timers do not fire here:
    // the upstream hangs up as well. Then the connection must close.
    // It hangs up on every connection, also those the proxy opens meanwhile (a request sent
    // again on a fresh connection after a stale or refused one).
    for (int i = 0; i < 200 && listener().connections > before; ++i) {
      backend->close_all();
      turn();
    }
    FUZZ_CHECK(listener().connections == before,
               "client connection still open after the client and the upstream closed");
    // Upstream connections are closed too, so the next input starts from an empty pool: the
    // idle ones here, and the backend closes its side of every one.
    Upstream::Pick pick = worker->upstream(0).pick(uv_now(loop));
    if (pick.endpoint) pick.endpoint->pool->close_idle();
    backend->close_all();
    for (int i = 0; i < 200 && !backend->all_closed(); ++i) turn();
    FUZZ_CHECK(backend->all_closed(), "backend connections still open");
    for (int i = 0; i < 4; ++i) turn();
    backend->forget_closed();
    return received;
  }

  Config config;
  std::unique_ptr<AccessLogSink> sink;
  std::unique_ptr<WorkerStats> stats;
  std::unique_ptr<StatsRegistry> registry;
  std::shared_ptr<const Generation> generation;
  std::shared_ptr<UpstreamState> upstream_state;
  std::unique_ptr<Worker> worker;
  uv_loop_t* loop = nullptr;
  std::unique_ptr<Backend> backend;
};

}  // namespace bulwark::fuzz
