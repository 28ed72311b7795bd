// A whole request path on one private loop, driven by the test: a Worker that is built but not
// started (its loop is turned here, with UV_RUN_ONCE), one listener routing everything to the
// upstream "app", whose one endpoint is a LoopbackBackend on the same loop, and clients that
// are libuv TCP sockets on that loop too. Each client's accepted socket becomes a
// ClientConnection exactly as Worker::serve() makes one. Nothing waits on the clock.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <csignal>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "admin/access_log.h"
#include "admin/stats.h"
#include "config/config.h"
#include "core/log.h"
#include "pipeline/client_connection.h"
#include "pipeline/route_state.h"
#include "pipeline/router.h"
#include "upstream/loopback_backend.h"
#include "upstream/upstream.h"
#include "upstream/upstream_state.h"
#include "generation.h"
#include "worker.h"
#include "test_helpers.h"

namespace bulwark::test {

// A client socket on the fixture's loop, collecting what the proxy sends it.
struct TestClient {
  uv_tcp_t tcp{};
  uv_connect_t connect_req{};
  std::string received;
  bool connected = false;
  bool eof = false;
  bool closed = false;

  void send(const std::string& bytes) { test::write_copy(tcp, bytes); }
  void close() { test::close_once(tcp, closed); }
  void start_reading() {
    uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp), on_alloc, on_read);
  }
  void stop_reading() { uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp)); }
  static void on_alloc(uv_handle_t*, std::size_t, uv_buf_t* buf) {
    static char scratch[64 * 1024];
    *buf = uv_buf_init(scratch, sizeof scratch);
  }
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* self = static_cast<TestClient*>(s->data);
    if (n > 0) self->received.append(buf->base, static_cast<std::size_t>(n));
    if (n < 0) self->eof = true;
  }
  // Closes with a RST: the proxy cannot take it for a half-close.
  void reset() {
    if (closed) return;
    closed = true;
    uv_tcp_close_reset(&tcp, nullptr);
  }
};

// One response as the client read it (Content-Length framing only).
struct ClientResponse {
  int status = 0;
  std::string head;
  std::string body;
};

// Takes one complete response off the front of `in`; false when none is complete yet.
inline bool take_response(std::string& in, ClientResponse& out) {
  std::size_t end = in.find("\r\n\r\n");
  if (end == std::string::npos || in.size() < 12) return false;
  std::string head = in.substr(0, end + 4);
  std::size_t length = 0;
  std::string lower = head;
  for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  std::size_t cl = lower.find("\r\ncontent-length:");
  if (cl != std::string::npos) length = std::strtoul(head.c_str() + cl + 17, nullptr, 10);
  if (in.size() < end + 4 + length) return false;
  out.status = std::atoi(head.c_str() + 9);
  out.head = head;
  out.body = in.substr(end + 4, length);
  in.erase(0, end + 4 + length);
  return true;
}

class ProxyFixture {
 public:
  // `tweak` adjusts the config (timeouts, pool, breaker) before anything is built from it.
  explicit ProxyFixture(const std::function<void(Config&)>& tweak = {}) {
    std::signal(SIGPIPE, SIG_IGN);  // as the server does
    set_log_level(LogLevel::error);
    ListenerConfig l;
    l.name = "main";
    l.listen = "127.0.0.1:0";
    // Backstops: a test that waits for something that never comes fails after these rather
    // than hanging (none of the tests below runs into them).
    l.header_timeout_ms = 5000;
    l.idle_timeout_ms = 5000;
    RouteConfig r;
    r.name = "all";
    r.upstream = "app";
    r.timeout_ms = 5000;
    l.routes.push_back(r);
    config.listeners.push_back(l);
    UpstreamConfig u;
    u.name = "app";
    config.upstreams.push_back(u);
    config.access_log_path = "off";
    if (tweak) tweak(config);

    std::string error;
    sink = AccessLogSink::open("off", error);
    REQUIRE(sink);
    stats = std::make_unique<WorkerStats>();
    registry = std::make_unique<StatsRegistry>(1);
    generation = build_generation(std::make_shared<const Config>(config), nullptr, *registry);
    upstream_state = generation->upstreams[0];
    worker = std::make_unique<Worker>(0, generation, *stats, *sink, std::vector<int>{}, nullptr);
    loop = worker->loop();
    set_upstream_read_buffer(worker->read_buffer());  // Worker::run() does this on its thread
    TurnWrites::set_current(&worker->turn_writes());  // and this
    backend = std::make_unique<LoopbackBackend>(loop);
    upstream_state->set_endpoints(
        merge_endpoints(*upstream_state->endpoints(), {backend->address()}, config.upstreams[0], 1));
    worker->upstream(0).refresh_endpoints();
    uv_timer_init(loop, &watchdog);
    uv_timer_start(&watchdog, [](uv_timer_t*) {}, 100, 100);
    uv_unref(reinterpret_cast<uv_handle_t*>(&watchdog));  // wakes the loop, keeps nothing alive

    worker->listener(0).open = true;

    // Accepted by hand, as the worker does.
    listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listen_fd >= 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(listen_fd, 16) == 0);
    socklen_t len = sizeof listen_addr;
    REQUIRE(::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&listen_addr), &len) == 0);
  }

  ~ProxyFixture() {
    // Clients hang up; the proxy closes each connection once it sees that.
    for (auto& c : clients) c->close();
    run_until([&] { return listener().connections == 0; });
    close_upstreams();
    backend->close();
    ::close(listen_fd);
    // The worker's own handles (async, prepare, timers), which Worker::run() would close at
    // its end, the request buffers' timers and the watchdog.
    uv_walk(
        loop,
        [](uv_handle_t* h, void*) {
          if (!uv_is_closing(h)) uv_close(h, nullptr);
        },
        nullptr);
    uv_run(loop, UV_RUN_DEFAULT);
    worker->exchanges().sweep();
    CHECK(uv_loop_close(loop) == 0);
    set_upstream_read_buffer(nullptr);
    TurnWrites::set_current(nullptr);
    worker.reset();
    backend.reset();
    set_log_level(LogLevel::info);
  }
  ProxyFixture(const ProxyFixture&) = delete;
  ProxyFixture& operator=(const ProxyFixture&) = delete;

  // Turns the loop (as the worker would, sweeping retired exchanges between turns) until
  // `done()` holds; fails the test if it never does.
  template <typename F>
  void run_until(F done, int max_turns = 20000) {
    // done() is called once per turn and its last answer checked (it may consume input).
    // A turn blocks until something happens; the watchdog wakes it now and then, so a test
    // waiting for what never comes fails after 10 s instead of hanging.
    std::uint64_t give_up = uv_hrtime() + 10'000'000'000ull;
    bool ok = done();
    for (int i = 0; i < max_turns && !ok && uv_hrtime() < give_up; ++i) {
      uv_run(loop, UV_RUN_ONCE);
      worker->between_turns();
      ok = done();
    }
    REQUIRE(ok);
  }
  // A few turns for whatever is under way (writes, reads) to settle.
  void settle(int turns = 20) {
    for (int i = 0; i < turns; ++i) {
      uv_run(loop, UV_RUN_NOWAIT);
      worker->between_turns();
    }
  }

  // A client connected to the listener, its connection served by a new ClientConnection.
  // `first_bytes` are in the socket before the ClientConnection opens (and arms its timer).
  TestClient& connect(const std::string& first_bytes = "") {
    clients.push_back(std::make_unique<TestClient>());
    TestClient& c = *clients.back();
    uv_tcp_init_ex(loop, &c.tcp, AF_INET);
    c.tcp.data = &c;
    if (client_rcvbuf > 0) {
      int size = client_rcvbuf;  // set before connecting: no autotuning of the window
      uv_recv_buffer_size(reinterpret_cast<uv_handle_t*>(&c.tcp), &size);
    }
    c.connect_req.data = &c;
    REQUIRE(uv_tcp_connect(&c.connect_req, &c.tcp, reinterpret_cast<const sockaddr*>(&listen_addr),
                           [](uv_connect_t* req, int status) {
                             auto* self = static_cast<TestClient*>(req->data);
                             self->connected = status == 0;
                           }) == 0);
    run_until([&] { return c.connected; });
    if (!first_bytes.empty()) {
      uv_buf_t b = uv_buf_init(const_cast<char*>(first_bytes.data()),
                               static_cast<unsigned>(first_bytes.size()));
      REQUIRE(uv_try_write(reinterpret_cast<uv_stream_t*>(&c.tcp), &b, 1) ==
              static_cast<int>(first_bytes.size()));
    }
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    REQUIRE(fd >= 0);
    auto* d = new ClientConnection(listener());
    worker->add_downstream(d);
    REQUIRE(d->open(fd));
    c.start_reading();
    return c;
  }

  // Waits for the next complete response on `c`.
  ClientResponse response(TestClient& c) {
    ClientResponse r;
    run_until([&] { return take_response(c.received, r) || c.eof; });
    REQUIRE(r.status != 0);
    return r;
  }

  // The endpoint's pool on this worker.
  ConnectionPool& pool() {
    Upstream::Pick p = worker->upstream(0).pick(uv_now(loop));
    REQUIRE(p.endpoint);
    return static_cast<ConnectionPool&>(*p.endpoint->pool);
  }

  // Closes the pools of the current generation's upstreams.
  void close_upstreams() {
    for (std::size_t i = 0; i < generation->upstreams.size(); ++i) worker->upstream(i).close_all();
  }

  // The listener "main" as the worker runs it.
  ListenerRuntime& listener() { return worker->listener(0); }

  Config config;
  std::unique_ptr<AccessLogSink> sink;
  std::unique_ptr<WorkerStats> stats;
  std::unique_ptr<StatsRegistry> registry;
  std::shared_ptr<const Generation> generation;
  std::shared_ptr<UpstreamState> upstream_state;
  std::unique_ptr<Worker> worker;
  uv_loop_t* loop = nullptr;
  std::unique_ptr<LoopbackBackend> backend;
  int listen_fd = -1;
  sockaddr_in listen_addr{};
  std::vector<std::unique_ptr<TestClient>> clients;
  int client_rcvbuf = 0;  // SO_RCVBUF of clients made from here on (0: the system's)
  uv_timer_t watchdog{};
};

// "GET <path> HTTP/1.1" with a Host header.
inline std::string get(const std::string& path) {
  return "GET " + path + " HTTP/1.1\r\nHost: example.com\r\n\r\n";
}

// The path of a request head ("GET /a HTTP/1.1...": "/a").
inline std::string path_of(const std::string& head) {
  std::size_t sp = head.find(' ');
  return head.substr(sp + 1, head.find(' ', sp + 1) - sp - 1);
}

// A 200 whose body is `body`.
inline std::string ok(const std::string& body) {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace bulwark::test
