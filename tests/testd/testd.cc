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
#include <llhttp.h>
#include <uv.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "capacity.h"
#include "checksum.h"
#include "sha1.h"
#include "text.h"
#include "websocket.h"

namespace {

using testd::crc_init;
using testd::crc_update;
using testd::hex;
using testd::json_escape;

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

struct Conn;
void conn_close(Conn* c);
void conn_reset(Conn* c);

struct WriteReq {
  uv_write_t req;
  Conn* conn;
  std::string data;
};

struct Conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  llhttp_t parser;
  llhttp_settings_t settings;
  std::string url, field, value;
  std::vector<std::pair<std::string, std::string>> headers;
  bool in_value = false;
  int open_handles = 2;
  bool closing = false;
  // current request
  std::uint32_t body_crc = 0;
  std::uint64_t body_bytes = 0;
  bool echo = false, echo_chunked = false;
  bool busy = false;    // a response is being generated
  std::string pending;  // bytes of pipelined requests received while busy
  // response generation
  std::uint64_t remaining = 0, offset = 0;
  bool gen_chunked = false, close_after = false, reset_half = false;
  bool websocket = false;
  std::string ws_buf;
  std::size_t queued = 0;
  bool paused = false;
  bool in_execute = false;
  std::uint64_t served = 0;               // requests answered on this connection
  testd::CapacityJob* cap_job = nullptr;  // waiting or in service in capacity mode

  std::string param(const char* name) const {
    std::string key = std::string(name) + "=";
    auto q = url.find('?');
    if (q != std::string::npos) {
      std::string query = url.substr(q + 1);
      std::size_t at = 0;
      while (at <= query.size()) {
        auto amp = query.find('&', at);
        std::string kv = query.substr(at, amp == std::string::npos ? std::string::npos : amp - at);
        if (kv.rfind(key, 0) == 0) return kv.substr(key.size());
        if (amp == std::string::npos) break;
        at = amp + 1;
      }
    }
    std::string h = std::string("x-testd-") + name;
    for (auto& [n, v] : headers)
      if (strcasecmp(n.c_str(), h.c_str()) == 0) return v;
    return "";
  }
  std::string header(const char* name) const {
    for (auto& [n, v] : headers)
      if (strcasecmp(n.c_str(), name) == 0) return v;
    return "";
  }
  std::string path() const { return url.substr(0, url.find('?')); }
};

void on_close(uv_handle_t* h) {
  auto* c = static_cast<Conn*>(h->data);
  if (--c->open_handles == 0) delete c;
}

void conn_close(Conn* c) {
  if (c->closing) return;
  c->closing = true;
  --g_connections_open;
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

void finish_response(Conn* c) {
  c->busy = false;
  if (c->close_after) {
    // Close once the queued bytes are written.
    auto* req = new uv_shutdown_t;
    req->data = c;
    if (uv_shutdown(req, reinterpret_cast<uv_stream_t*>(&c->tcp), [](uv_shutdown_t* r, int) {
          auto* cc = static_cast<Conn*>(r->data);
          delete r;
          conn_close(cc);
        }) != 0) {
      delete req;
      conn_close(c);
    }
    return;
  }
  if (g_idle_close_ms)
    uv_timer_start(
        &c->timer, [](uv_timer_t* t) { conn_close(static_cast<Conn*>(t->data)); }, g_idle_close_ms,
        0);
  if (c->in_execute) return;  // process() goes on with the bytes after this request
  llhttp_resume(&c->parser);
  if (!c->pending.empty()) {
    std::string p;
    p.swap(c->pending);
    process(c, p.data(), p.size());
  }
}

void continue_generate(Conn* c) {
  while (c->remaining > 0 && c->queued < 256 * 1024 && !c->closing) {
    std::uint64_t n = c->remaining < 16384 ? c->remaining : 16384;
    if (c->reset_half && c->offset >= (c->offset + c->remaining) / 2 && c->offset > 0) {
      conn_reset(c);
      return;
    }
    std::string out;
    if (c->gen_chunked) {
      char h[32];
      std::snprintf(h, sizeof h, "%llx\r\n", static_cast<unsigned long long>(n));
      out += h;
    }
    std::size_t start = static_cast<std::size_t>(c->offset % 251);
    out.append(pattern_block + start, static_cast<std::size_t>(n));
    if (c->gen_chunked) out += "\r\n";
    c->offset += n;
    c->remaining -= n;
    send(c, std::move(out));
  }
  if (c->remaining == 0 && !c->closing) {
    if (c->reset_half) {
      conn_reset(c);
      return;
    }
    if (c->gen_chunked) send(c, "0\r\n\r\n");
    finish_response(c);
  }
}

void respond(Conn* c) {
  ++g_requests;
  std::string path = c->path();
  int status = 200;
  std::string body;
  std::string extra;
  std::string path_now = c->path();
  bool control = path_now.rfind("/__", 0) == 0;
  std::string reset = control ? "" : c->param("reset");  // /__mode?reset=... sets, not resets
  if (reset.empty() && !control) reset = g_mode_reset;
  if (reset == "before" || (reset == "reused" && c->served > 0)) {
    conn_reset(c);
    return;
  }
  ++c->served;
  if (path == "/__stats") {
    body = "{\"connections_total\":" + std::to_string(g_connections_total) +
           ",\"connections_open\":" + std::to_string(g_connections_open) +
           ",\"requests\":" + std::to_string(g_requests) + "}";
  } else if (path == "/__mode") {
    // /__mode?status=500 | ?reset=before|after | ?delay=MS; /__mode alone clears all.
    g_mode_status = std::atoi(c->param("status").c_str());
    g_mode_reset = c->param("reset");
    g_default_delay_ms = std::strtoull(c->param("delay").c_str(), nullptr, 10);
    body = "mode status=" + std::to_string(g_mode_status) + " reset=" + g_mode_reset +
           " delay=" + std::to_string(g_default_delay_ms) + "\n";
  } else if (path == "/__health") {
    std::string s = c->param("status");
    if (!s.empty()) g_health_status = std::atoi(s.c_str());
    std::string d = c->param("delay");
    if (!d.empty()) g_health_delay_ms = std::strtoull(d.c_str(), nullptr, 10);
    body = "health " + std::to_string(g_health_status) + "\n";
  } else if (path == "/__capacity") {
    body = testd::capacity_control(c->param("c"), c->param("service_ms"), status);
  } else if (path == "/healthz") {
    status = g_health_status;
    body = status < 400 ? "ok\n" : "unhealthy\n";
  } else if (c->param("headers") == "1") {
    body = "{\"method\":\"" +
           std::string(llhttp_method_name(static_cast<llhttp_method_t>(c->parser.method))) +
           "\",\"url\":\"" + json_escape(c->url) + "\",\"version\":\"1." +
           std::to_string(c->parser.http_minor) + "\",\"headers\":[";
    for (std::size_t i = 0; i < c->headers.size(); ++i) {
      if (i) body += ",";
      body += "[\"" + json_escape(c->headers[i].first) + "\",\"" +
              json_escape(c->headers[i].second) + "\"]";
    }
    body += "]}";
  }
  std::string st = control ? "" : c->param("status");
  if (!st.empty())
    status = std::atoi(st.c_str());
  else if (g_mode_status && !control && path != "/healthz")
    status = g_mode_status;
  std::uint64_t size = std::strtoull(c->param("size").c_str(), nullptr, 10);
  bool chunked = c->param("chunked") == "1";
  bool eof = c->param("eof") == "1";
  bool http10 = c->param("http10") == "1";  // an HTTP/1.0 server: no keep-alive
  c->close_after =
      c->param("close") == "1" || eof || http10 || !llhttp_should_keep_alive(&c->parser);
  c->reset_half = reset == "after";
  extra += "x-testd-name: " + g_name + "\r\n";
  std::string retry_after = c->param("retry_after");
  if (!retry_after.empty()) extra += "Retry-After: " + retry_after + "\r\n";
  extra += "x-testd-body-bytes: " + std::to_string(c->body_bytes) + "\r\n";
  extra += "x-testd-body-crc32: " + hex(c->body_crc) + "\r\n";
  std::string head =
      (http10 ? "HTTP/1.0 " : "HTTP/1.1 ") + std::to_string(status) + " Status\r\n" + extra;
  bool head_method = c->parser.method == HTTP_HEAD;
  if (size > 0) {
    head += "x-testd-crc32: " + hex(testd::pattern_crc(pattern_block, size)) + "\r\n";
    if (chunked)
      head += "Transfer-Encoding: chunked\r\n";
    else if (!eof)
      head += "Content-Length: " + std::to_string(size) + "\r\n";
    if (c->close_after) head += "Connection: close\r\n";
    head += "\r\n";
    send(c, head);
    if (head_method) {
      finish_response(c);
      return;
    }
    c->remaining = size;
    c->offset = 0;
    c->gen_chunked = chunked;
    continue_generate(c);
    return;
  }
  if (chunked && !body.empty()) {
    char h[32];
    std::snprintf(h, sizeof h, "%zx\r\n", body.size());
    head += "Transfer-Encoding: chunked\r\n";
    if (c->close_after) head += "Connection: close\r\n";
    head += "\r\n";
    send(c, head + (head_method ? "" : h + body + "\r\n0\r\n\r\n"));
  } else {
    if (!eof) head += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    if (c->close_after) head += "Connection: close\r\n";
    head += "\r\n";
    send(c, head + (head_method ? "" : body));
  }
  if (c->reset_half) {
    conn_reset(c);
    return;
  }
  finish_response(c);
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
  uv_tcp_nodelay(&c->tcp, 1);  // head and body go out as separate writes
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
}

}  // namespace

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
  uv_tcp_t server;
  uv_tcp_init(g_loop, &server);
  sockaddr_storage addr{};
  if (uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
    std::fprintf(stderr, "bad host %s\n", host.c_str());
    return 2;
  }
  int rc = uv_tcp_bind(&server, reinterpret_cast<sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&server), 1024, on_connection);
  if (rc != 0) {
    std::fprintf(stderr, "listen %s:%d: %s\n", host.c_str(), port, uv_strerror(rc));
    return 1;
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(&server, reinterpret_cast<sockaddr*>(&bound), &len);
  int real_port = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  std::printf("PORT %d\n", real_port);
  std::fflush(stdout);
  return uv_run(g_loop, UV_RUN_DEFAULT);
}
