// Test helpers for upstream connections against a real loopback socket on a private loop: a
// scripted HTTP backend (127.0.0.1, ephemeral port) and an UpstreamClient that records what
// the connection reports. Nothing waits on the clock: tests turn the loop with UV_RUN_ONCE
// until what they expect has happened.
#pragma once

#include <doctest/doctest.h>
#include <uv.h>

#include <csignal>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "admin/stats.h"
#include "config/config.h"
#include "net/address.h"
#include "net/write_queue.h"
#include "upstream/connection.h"
#include "upstream/pool.h"
#include "test_helpers.h"

namespace bulwark::test {

// A backend on 127.0.0.1:<ephemeral>. Each accepted connection records the bytes it received;
// every request head it receives ("\r\n\r\n") is answered by `responder` (given the head) when
// set, else with `auto_response` when that is set. Otherwise tests answer by hand through
// conn(i). Request bodies are not expected.
class LoopbackBackend {
 public:
  struct Conn {
    LoopbackBackend* owner = nullptr;
    uv_tcp_t tcp{};
    std::string received;
    std::size_t answered = 0;  // requests answered by auto_response
    bool eof = false;          // the proxy side closed
    bool closed = false;       // closed here
    void write(const std::string& bytes) { test::write_copy(tcp, bytes); }
    void close() { test::close_once(tcp, closed); }
    void stop_reading() { uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp)); }
    void start_reading() {
      uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp), LoopbackBackend::on_alloc,
                    LoopbackBackend::on_read);
    }
    // Closes with a RST instead of a FIN.
    void reset() {
      if (closed) return;
      closed = true;
      uv_tcp_close_reset(&tcp, nullptr);
    }
  };

  explicit LoopbackBackend(uv_loop_t* loop) : loop_(loop) {
    uv_tcp_init(loop_, &server_);
    server_.data = this;
    sockaddr_in sa{};
    uv_ip4_addr("127.0.0.1", 0, &sa);
    REQUIRE(uv_tcp_bind(&server_, reinterpret_cast<const sockaddr*>(&sa), 0) == 0);
    REQUIRE(uv_listen(reinterpret_cast<uv_stream_t*>(&server_), 64, on_connection) == 0);
    sockaddr_storage bound{};
    int len = sizeof bound;
    uv_tcp_getsockname(&server_, reinterpret_cast<sockaddr*>(&bound), &len);
    port_ = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }
  ~LoopbackBackend() { close(); }
  LoopbackBackend(const LoopbackBackend&) = delete;
  LoopbackBackend& operator=(const LoopbackBackend&) = delete;

  int port() const { return port_; }
  Address address() const {
    Address a;
    std::string error;
    REQUIRE(parse_ip_address("127.0.0.1:" + std::to_string(port_), a, error));
    return a;
  }
  std::size_t accepted() const { return conns_.size(); }
  Conn& conn(std::size_t i) { return *conns_.at(i); }
  // Stops listening and closes every connection still open here (run the loop afterwards).
  void close() {
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&server_)))
      uv_close(reinterpret_cast<uv_handle_t*>(&server_), nullptr);
    for (auto& c : conns_) c->close();
  }

  std::string auto_response;
  std::function<std::string(const std::string& head)> responder;

 private:
  static void on_connection(uv_stream_t* server, int status) {
    auto* self = static_cast<LoopbackBackend*>(server->data);
    if (status < 0) return;
    auto c = std::make_unique<Conn>();
    c->owner = self;
    uv_tcp_init(self->loop_, &c->tcp);
    c->tcp.data = c.get();
    if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
      c->closed = true;
      uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), nullptr);
      self->conns_.push_back(std::move(c));  // closed: freed with the backend
      return;
    }
    uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
    self->conns_.push_back(std::move(c));
  }
  static void on_alloc(uv_handle_t*, std::size_t, uv_buf_t* buf) {
    static char scratch[64 * 1024];
    *buf = uv_buf_init(scratch, sizeof scratch);
  }
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* c = static_cast<Conn*>(s->data);
    if (n < 0) {
      c->eof = true;
      c->close();
      return;
    }
    c->received.append(buf->base, static_cast<std::size_t>(n));
    LoopbackBackend* self = c->owner;
    if (self->auto_response.empty() && !self->responder) return;
    std::vector<std::string> heads;
    std::size_t start = 0;
    for (std::size_t at = c->received.find("\r\n\r\n"); at != std::string::npos;
         at = c->received.find("\r\n\r\n", at + 4)) {
      heads.push_back(c->received.substr(start, at + 4 - start));
      start = at + 4;
    }
    for (; c->answered < heads.size(); ++c->answered)
      c->write(self->responder ? self->responder(heads[c->answered]) : self->auto_response);
  }

  uv_loop_t* loop_;
  uv_tcp_t server_{};
  int port_ = 0;
  std::vector<std::unique_ptr<Conn>> conns_;  // freed with the backend, after the loop ran
};

// Records what an UpstreamConnection reports, as one event string per callback.
struct RecordingClient final : UpstreamClient {
  std::vector<std::string> events;
  std::string body;
  int status = 0;
  bool complete = false;
  bool errored = false;
  UpstreamError error{};
  std::string error_detail;
  int drained = 0;
  // Runs in on_upstream_complete (e.g. to release the connection, as an Attempt does).
  std::function<void()> on_complete;

  void on_upstream_connected() override { events.push_back("connected"); }
  void on_upstream_interim(UpstreamStream& c) override {
    events.push_back("interim " + std::to_string(c.status()));
  }
  void on_upstream_headers(UpstreamStream& c) override {
    status = c.status();
    events.push_back("headers " + std::to_string(c.status()));
  }
  void on_upstream_chunk_header(std::uint64_t size) override {
    events.push_back("chunk " + std::to_string(size));
  }
  void on_upstream_body(const char* data, std::size_t len) override { body.append(data, len); }
  void on_upstream_chunk_complete() override { events.push_back("chunk end"); }
  void on_upstream_complete() override {
    complete = true;
    events.push_back("complete");
    if (on_complete) on_complete();
  }
  void on_upstream_tunnel_data(const char* data, std::size_t len) override {
    events.push_back("tunnel " + std::string(data, len));
  }
  void on_upstream_error(UpstreamError e, std::string_view detail) override {
    errored = true;
    error = e;
    error_detail.assign(detail);
    events.push_back("error");
  }
  void on_upstream_batch_end() override {}
  void on_upstream_drained() override { ++drained; }
};

// A loop, a backend and a pool to it. The read buffer upstream connections read into is set
// for this thread (the worker does this before its loop runs).
struct PoolFixture {
  explicit PoolFixture(std::size_t cap = 4, std::size_t max_idle = 4,
                       std::uint64_t idle_timeout_ms = 60000)
      : read_buffer(new char[kReadBufferSize]) {
    std::signal(SIGPIPE, SIG_IGN);  // as the server does
    uv_loop_init(&loop);
    set_upstream_read_buffer(read_buffer.get());
    backend = std::make_unique<LoopbackBackend>(&loop);
    config.name = "app";
    config.pool.idle_timeout_ms = idle_timeout_ms;
    pool = std::make_unique<ConnectionPool>(&loop, backend->address(), config, cap, max_idle,
                                            stats);
  }
  ~PoolFixture() {
    pool->close_all();
    backend->close();
    uv_run(&loop, UV_RUN_DEFAULT);
    pool.reset();
    backend.reset();
    CHECK(uv_loop_close(&loop) == 0);
    set_upstream_read_buffer(nullptr);
  }
  PoolFixture(const PoolFixture&) = delete;
  PoolFixture& operator=(const PoolFixture&) = delete;

  // Turns the loop until `done()` holds; fails the test if the loop runs dry first.
  template <typename F>
  void run_until(F done, int max_turns = 10000) {
    for (int i = 0; i < max_turns && !done(); ++i) uv_run(&loop, UV_RUN_ONCE);
    REQUIRE(done());
  }
  // Sends one GET on `conn` for `client`.
  static void send_get(UpstreamConnection* conn, UpstreamClient* client, bool head = false) {
    conn->attach(client, head);
    conn->out().add_copy(head ? "HEAD / HTTP/1.1\r\nHost: app\r\n\r\n"
                              : "GET / HTTP/1.1\r\nHost: app\r\n\r\n");
    REQUIRE(conn->flush());
  }
  // A connection of the pool that has carried one complete response and is idle again.
  UpstreamConnection* make_idle() {
    UpstreamConnection* c = pool->acquire(nullptr);
    REQUIRE(c != nullptr);
    RecordingClient client;
    send_get(c, &client);
    run_until([&] { return client.complete || client.errored; });
    REQUIRE(client.complete);
    c->release(true);
    return c;
  }

  std::unique_ptr<char[]> read_buffer;
  uv_loop_t loop{};
  std::unique_ptr<LoopbackBackend> backend;
  UpstreamConfig config;
  EndpointStats stats;
  std::unique_ptr<ConnectionPool> pool;
};

}  // namespace bulwark::test
