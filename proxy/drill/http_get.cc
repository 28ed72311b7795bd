#include "drill/http_get.h"

#include <llhttp.h>
#include <netdb.h>

#include <cstring>

#include "drill/scenario.h"

namespace bulwark::drill {
namespace {

constexpr std::size_t kMaxBody = 8 * 1024 * 1024;

struct Get {
  uv_tcp_t tcp{};
  uv_connect_t connect{};
  uv_write_t write{};
  uv_timer_t timer{};
  llhttp_t parser{};
  llhttp_settings_t settings{};
  std::string request, body, error;
  int status = 0, handles = 2;
  bool complete = false, ended = false;
  GetCallback done;
  char buffer[16 * 1024];

  void end(std::string why) {
    if (ended) return;
    ended = true;
    if (!complete && error.empty()) error = why.empty() ? "no complete response" : why;
    uv_timer_stop(&timer);
    auto on_close = [](uv_handle_t* h) {
      auto* g = static_cast<Get*>(h->data);
      if (--g->handles == 0) {
        GetCallback cb = std::move(g->done);
        int st = g->complete ? g->status : 0;
        std::string b = std::move(g->body), e = std::move(g->error);
        delete g;
        cb(st, std::move(b), std::move(e));
      }
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp), on_close);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), on_close);
  }
};

void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* g = static_cast<Get*>(s->data);
  if (g->ended) return;
  if (n < 0) {
    if (n == UV_EOF) llhttp_finish(&g->parser);
    return g->end(n == UV_EOF ? "" : uv_strerror(static_cast<int>(n)));
  }
  llhttp_errno_t err = llhttp_execute(&g->parser, buf->base, static_cast<std::size_t>(n));
  if (g->complete) return g->end("");
  if (err != HPE_OK) g->end(std::string("bad response: ") + llhttp_errno_name(err));
}

}  // namespace

void http_get(uv_loop_t* loop, const sockaddr_storage& address, const Url& url,
              std::uint64_t timeout_ms, GetCallback done) {
  auto* g = new Get;
  g->done = std::move(done);
  g->tcp.data = g->connect.data = g->write.data = g->timer.data = g;
  std::string host = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  g->request = "GET " + url.path + " HTTP/1.1\r\nHost: " + host + ":" + std::to_string(url.port) +
               "\r\nUser-Agent: bulwark-drill\r\nConnection: close\r\n\r\n";
  llhttp_settings_init(&g->settings);
  g->settings.on_body = [](llhttp_t* p, const char* at, std::size_t len) {
    auto* self = static_cast<Get*>(p->data);
    if (self->body.size() + len > kMaxBody) return -1;
    self->body.append(at, len);
    return 0;
  };
  g->settings.on_message_complete = [](llhttp_t* p) {
    auto* self = static_cast<Get*>(p->data);
    if (p->status_code < 200) return 0;
    self->status = p->status_code;
    self->complete = true;
    return 0;
  };
  llhttp_init(&g->parser, HTTP_RESPONSE, &g->settings);
  g->parser.data = g;
  uv_tcp_init(loop, &g->tcp);
  uv_timer_init(loop, &g->timer);
  uv_timer_start(&g->timer, [](uv_timer_t* t) { static_cast<Get*>(t->data)->end("timed out"); },
                 timeout_ms, 0);
  int rc = uv_tcp_connect(&g->connect, &g->tcp, reinterpret_cast<const sockaddr*>(&address),
                          [](uv_connect_t* req, int status) {
                            auto* self = static_cast<Get*>(req->data);
                            if (self->ended) return;
                            if (status != 0) return self->end(std::string("connect: ") + uv_strerror(status));
                            uv_buf_t b = uv_buf_init(self->request.data(),
                                                     static_cast<unsigned>(self->request.size()));
                            auto* stream = reinterpret_cast<uv_stream_t*>(&self->tcp);
                            if (uv_write(&self->write, stream, &b, 1, [](uv_write_t*, int) {}) != 0)
                              return self->end("write failed");
                            uv_read_start(
                                stream,
                                [](uv_handle_t* h, std::size_t, uv_buf_t* buf) {
                                  auto* gg = static_cast<Get*>(h->data);
                                  *buf = uv_buf_init(gg->buffer, sizeof gg->buffer);
                                },
                                on_read);
                          });
  if (rc != 0) g->end(std::string("connect: ") + uv_strerror(rc));
}

bool resolve(const std::string& host, std::uint16_t port, sockaddr_storage& out,
             std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    error = "cannot resolve " + host + ": " + gai_strerror(rc);
    return false;
  }
  std::memset(&out, 0, sizeof out);
  std::memcpy(&out, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return true;
}

}  // namespace bulwark::drill
