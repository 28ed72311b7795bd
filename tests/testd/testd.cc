// bulwark-testd: a fault-injecting HTTP/1.1 backend for the demo and the tests.
// Per request, by query parameter (or header x-testd-NAME):
//   status=N        response status (default 200)
//   delay=MS        wait before answering
//   size=N          response body of N bytes: byte i is (i % 251); x-testd-crc32 carries its CRC
//   chunked=1       send the body chunked
//   eof=1           no length: the body ends when the connection closes
//   close=1         Connection: close after the response
//   http10=1        answer as an HTTP/1.0 server (status line 1.0, close after)
//   reset=before    reset the connection instead of answering
//   reset=reused    reset instead of answering if the connection served a request before (a
//                   keep-alive connection the server dropped just as the client reused it)
//   reset=after     send the head and half the body, then reset
//   echo=1          stream the request body back as the response body
//   headers=1       the body is the request line and headers as JSON
//   retry_after=S   add Retry-After: S
// The request body is always read; x-testd-body-bytes and x-testd-body-crc32 report it.
// GET /healthz answers 200 "ok" (or the status set by GET /__health?status=N, after the
// delay set by GET /__health?delay=MS).
// GET /__mode?status=N|reset=before|after|delay=MS sets a failure mode for all later
// requests that do not choose otherwise; GET /__mode clears it.
// GET /__down?ms=N: the server goes down for N ms: it stops listening (new connections are
// refused) and resets every open connection, 50 ms after answering; then it listens again on
// the same port.
// GET /__stats answers {"connections_total":..,"connections_open":..,"requests":..}.
// Capacity mode (--capacity C, off when C = 0, the default; see capacity.h): at most C requests
// are worked on at once, each for --service-ms MS (plus its delay=, if any) after it is
// admitted; the rest wait in an unbounded FIFO queue, so latency grows past the knee.
// GET /__capacity?c=N&service_ms=MS changes either at run time (c=0 turns the mode off);
// GET /__capacity answers {"capacity":..,"service_ms":..,"busy":..,"queued":..}. Control
// paths (/__*), /healthz, echo=1 and websocket requests bypass the queue.
// Upgrade: websocket is accepted and every frame is echoed back.
// Usage: bulwark-testd [--host ADDR] [--port N] [--idle-close MS] [--delay MS] [--name NAME]
//                      [--capacity C] [--service-ms MS]
//   --idle-close MS closes keep-alive connections idle that long; --delay MS is the default delay.
//   --port 0 picks a free port; the chosen one is printed as "PORT n" on stdout.
// This file: accepting, reading, parsing, websocket echo, main(); respond.cc: the answer to one
// request; server.h: the connection and the state both share.
#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "capacity.h"
#include "checksum.h"
#include "server.h"
#include "sha1.h"
#include "text.h"
#include "websocket.h"

namespace testd {

uv_loop_t* g_loop;
std::uint64_t g_connections_total = 0, g_connections_open = 0, g_requests = 0;
int g_health_status = 200;
std::uint64_t g_health_delay_ms = 0;
std::uint64_t g_idle_close_ms = 0;
std::uint64_t g_default_delay_ms = 0;
// Failure mode for every request that does not ask otherwise, set by GET /__mode?...
int g_mode_status = 0;
std::string g_mode_reset;
std::string g_name = "testd";

char pattern_block[251 * 128];  // room for a 16 KiB slice at any phase

namespace {
uv_tcp_t* g_server = nullptr;    // null while down
sockaddr_storage g_listen_addr;  // with the port actually bound
std::set<Conn*> g_conns;         // open connections, for /__down
uv_timer_t g_down_timer;
std::uint64_t g_down_ms = 0;
bool g_down_timer_ready = false;
}  // namespace

void on_connection(uv_stream_t* server, int status);

int start_listening() {
  auto* server = new uv_tcp_t;
  uv_tcp_init(g_loop, server);
  int rc = uv_tcp_bind(server, reinterpret_cast<sockaddr*>(&g_listen_addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(server), 1024, on_connection);
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(server),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    return rc;
  }
  g_server = server;
  return 0;
}

void go_down(std::uint64_t ms) {
  if (!g_down_timer_ready) {
    uv_timer_init(g_loop, &g_down_timer);
    g_down_timer_ready = true;
  }
  g_down_ms = ms;
  uv_timer_start(&g_down_timer, [](uv_timer_t*) {
    if (g_server != nullptr) {
      uv_close(reinterpret_cast<uv_handle_t*>(g_server),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
      g_server = nullptr;
      std::set<Conn*> conns = g_conns;
      for (Conn* c : conns) conn_reset(c);
    }
    uv_timer_start(&g_down_timer, [](uv_timer_t*) {
      int rc = start_listening();
      if (rc != 0) std::fprintf(stderr, "testd: cannot listen again: %s\n", uv_strerror(rc));
    }, g_down_ms, 0);
  }, 50, 0);
}

void on_close(uv_handle_t* h) {
  auto* c = static_cast<Conn*>(h->data);
  if (--c->open_handles == 0) delete c;
}

void conn_close(Conn* c) {
  if (c->closing) return;
  c->closing = true;
  --g_connections_open;
  g_conns.erase(c);
  if (c->cap_job) testd::capacity_cancel(c->cap_job);
  c->cap_job = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_close);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), on_close);
}

void conn_reset(Conn* c) {
  if (c->closing) return;
  struct linger l = {1, 0};
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->tcp), &fd) == 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  conn_close(c);
}

void continue_generate(Conn* c);
void process(Conn* c, const char* data, std::size_t len);
void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
void on_alloc(uv_handle_t*, std::size_t, uv_buf_t* buf) {
  static char b[65536];
  buf->base = b;
  buf->len = sizeof b;
}

void on_write(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<WriteReq*>(req);
  Conn* c = w->conn;
  c->queued -= w->data.size();
  delete w;
  if (status < 0 || c->closing) return;
  if (c->remaining > 0 && c->queued < 256 * 1024) continue_generate(c);
  if (c->paused && c->queued < 256 * 1024) {
    c->paused = false;
    uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
  }
}

void send(Conn* c, std::string data) {
  if (c->closing || data.empty()) return;
  auto* w = new WriteReq;
  w->conn = c;
  w->data = std::move(data);
  c->queued += w->data.size();
  uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1, on_write) != 0) {
    c->queued -= w->data.size();
    delete w;
    conn_close(c);
  }
}

void on_delay(uv_timer_t* t) { respond(static_cast<Conn*>(t->data)); }

void on_capacity_done(void* arg) {
  auto* c = static_cast<Conn*>(arg);
  c->cap_job = nullptr;
  respond(c);
}

int cb_message_begin(llhttp_t* p) {
  auto* c = static_cast<Conn*>(p->data);
  c->url.clear();
  c->headers.clear();
  c->field.clear();
  c->value.clear();
  c->in_value = false;
  c->body_crc = 0;
  c->body_bytes = 0;
  c->echo = false;
  uv_timer_stop(&c->timer);
  return 0;
}
int cb_url(llhttp_t* p, const char* at, std::size_t n) {
  static_cast<Conn*>(p->data)->url.append(at, n);
  return 0;
}
int cb_field(llhttp_t* p, const char* at, std::size_t n) {
  auto* c = static_cast<Conn*>(p->data);
  if (c->in_value) {
    c->headers.emplace_back(c->field, c->value);
    c->field.clear();
    c->value.clear();
    c->in_value = false;
  }
  c->field.append(at, n);
  return 0;
}
int cb_value(llhttp_t* p, const char* at, std::size_t n) {
  auto* c = static_cast<Conn*>(p->data);
  c->in_value = true;
  c->value.append(at, n);
  return 0;
}
int cb_headers_complete(llhttp_t* p) {
  auto* c = static_cast<Conn*>(p->data);
  if (c->in_value || !c->field.empty()) c->headers.emplace_back(c->field, c->value);
  c->in_value = false;
  if (p->upgrade && strcasecmp(c->header("upgrade").c_str(), "websocket") == 0) return 0;
  if (c->param("echo") == "1") {
    c->echo = true;
    c->echo_chunked = (p->flags & F_CHUNKED) != 0;
    std::string head = "HTTP/1.1 200 OK\r\nx-testd-name: " + g_name + "\r\n";
    if (c->echo_chunked)
      head += "Transfer-Encoding: chunked\r\n";
    else
      head += "Content-Length: " + std::to_string(p->content_length) + "\r\n";
    head += "\r\n";
    send(c, head);
  }
  return 0;
}
int cb_body(llhttp_t* p, const char* at, std::size_t n) {
  auto* c = static_cast<Conn*>(p->data);
  c->body_crc = crc_update(c->body_crc, at, n);
  c->body_bytes += n;
  if (c->echo) {
    std::string out;
    if (c->echo_chunked) {
      char h[32];
      std::snprintf(h, sizeof h, "%zx\r\n", n);
      out = h;
    }
    out.append(at, n);
    if (c->echo_chunked) out += "\r\n";
    send(c, std::move(out));
    if (c->queued > 1024 * 1024 && !c->paused) {
      c->paused = true;
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
    }
  }
  return 0;
}
int cb_message_complete(llhttp_t* p) {
  auto* c = static_cast<Conn*>(p->data);
  if (p->upgrade) return 0;
  c->busy = true;
  if (c->echo) {
    ++g_requests;
    if (c->echo_chunked) send(c, "0\r\n\r\n");
    c->close_after = !llhttp_should_keep_alive(p);
    finish_response(c);
    return HPE_PAUSED;
  }
  std::string delay_param = c->param("delay");
  std::uint64_t delay =
      delay_param.empty() ? g_default_delay_ms : std::strtoull(delay_param.c_str(), nullptr, 10);
  if (c->path().rfind("/__", 0) == 0) delay = 0;
  if (c->path() == "/healthz") delay = g_health_delay_ms;
  if (testd::capacity_on() && c->path().rfind("/__", 0) != 0 && c->path() != "/healthz") {
    c->cap_job = testd::capacity_submit(delay, on_capacity_done, c);  // delay adds to the work
  } else if (delay > 0) {
    uv_timer_start(&c->timer, on_delay, delay, 0);
  } else {
    respond(c);
  }
  return HPE_PAUSED;
}

void websocket_accept(Conn* c) {
  std::string key = c->header("sec-websocket-key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::uint8_t digest[20];
  testd::sha1(key.data(), key.size(), digest);
  send(c,
       "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Accept: " +
           testd::base64(digest, 20) + "\r\n\r\n");
  c->websocket = true;
}

void websocket_data(Conn* c, const char* data, std::size_t len) {
  c->ws_buf.append(data, len);
  std::string reply;
  bool close = false;
  while (testd::websocket_echo(c->ws_buf, reply, close)) {
    send(c, reply);
    if (close) {
      c->close_after = true;
      finish_response(c);
      return;
    }
  }
}

void process(Conn* c, const char* data, std::size_t len) {
  if (c->websocket) {
    websocket_data(c, data, len);
    return;
  }
  if (c->busy) {
    c->pending.append(data, len);
    return;
  }
  c->in_execute = true;
  llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
  c->in_execute = false;
  if (c->closing) return;
  if (err == HPE_PAUSED) {
    const char* rest = llhttp_get_error_pos(&c->parser);
    std::size_t n = static_cast<std::size_t>(data + len - rest);
    if (c->busy) {
      c->pending.append(rest, n);
      return;
    }
    llhttp_resume(&c->parser);
    if (n > 0) process(c, rest, n);
    return;
  }
  if (err == HPE_PAUSED_UPGRADE) {
    websocket_accept(c);
    const char* rest = llhttp_get_error_pos(&c->parser);
    std::size_t n = static_cast<std::size_t>(data + len - rest);
    if (n) websocket_data(c, rest, n);
    return;
  }
  if (err != HPE_OK) {
    send(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    c->close_after = true;
    finish_response(c);
  }
}

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* c = static_cast<Conn*>(s->data);
  if (c->closing) return;
  if (n < 0) {
    if (c->busy && n == UV_EOF) return;  // half-close: still answer
    conn_close(c);
    return;
  }
  if (n > 0) {
    uv_timer_stop(&c->timer);
    process(c, buf->base, static_cast<std::size_t>(n));
  }
}

void on_connection(uv_stream_t* server, int status) {
  if (status < 0) return;
  auto* c = new Conn;
  uv_tcp_init(g_loop, &c->tcp);
  uv_timer_init(g_loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  llhttp_settings_init(&c->settings);
  c->settings.on_message_begin = cb_message_begin;
  c->settings.on_url = cb_url;
  c->settings.on_header_field = cb_field;
  c->settings.on_header_value = cb_value;
  c->settings.on_headers_complete = cb_headers_complete;
  c->settings.on_body = cb_body;
  c->settings.on_message_complete = cb_message_complete;
  llhttp_init(&c->parser, HTTP_REQUEST, &c->settings);
  c->parser.data = c;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    c->closing = true;
    ++g_connections_open;
    conn_close(c);
    return;
  }
  ++g_connections_total;
  ++g_connections_open;
  g_conns.insert(c);
  uv_tcp_nodelay(&c->tcp, 1);  // head and body go out as separate writes
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
}

}  // namespace testd

using namespace testd;

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  int port = 3000;
  std::uint64_t capacity = 0, service_ms = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--host")
      host = argv[i + 1];
    else if (a == "--port")
      port = std::atoi(argv[i + 1]);
    else if (a == "--idle-close")
      g_idle_close_ms = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--delay")
      g_default_delay_ms = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--name")
      g_name = argv[i + 1];
    else if (a == "--capacity")
      capacity = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--service-ms")
      service_ms = std::strtoull(argv[i + 1], nullptr, 10);
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  crc_init();
  for (std::size_t i = 0; i < sizeof pattern_block; ++i)
    pattern_block[i] = static_cast<char>(i % 251);
  signal(SIGPIPE, SIG_IGN);
  g_loop = uv_default_loop();
  testd::capacity_init(g_loop, capacity, service_ms);
  sockaddr_storage addr{};
  if (uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
    std::fprintf(stderr, "bad host %s\n", host.c_str());
    return 2;
  }
  g_listen_addr = addr;
  int rc = start_listening();
  if (rc != 0) {
    std::fprintf(stderr, "listen %s:%d: %s\n", host.c_str(), port, uv_strerror(rc));
    return 1;
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(g_server, reinterpret_cast<sockaddr*>(&bound), &len);
  int real_port = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  g_listen_addr = bound;  // listening again after /__down takes the same port
  std::printf("PORT %d\n", real_port);
  std::fflush(stdout);
  return uv_run(g_loop, UV_RUN_DEFAULT);
}
