#include "admin/admin_server.h"

#include <llhttp.h>

#include <cstring>

#include "admin/status_page.h"
#include "core/log.h"
#include "http/headers.h"
#include "net/listener.h"

namespace bulwark {

// One admin client connection. Requests are answered one at a time, in order: while a reply
// is being written, reading stops and bytes already read (pipelined requests) wait in
// `pending_`, at most one read's worth. Memory is freed when both handles have closed.
class AdminConnection {
 public:
  AdminConnection(AdminServer& server) : server_(server) {
    uv_tcp_init(server.loop_, &tcp_);
    uv_timer_init(server.loop_, &timer_);
    tcp_.data = this;
    timer_.data = this;
    llhttp_init(&parser_, HTTP_REQUEST, &settings());
    parser_.data = this;
  }

  // False: the connection could not be accepted and is closing.
  bool start(uv_stream_t* listener) {
    if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&tcp_)) != 0 || !read()) {
      close();
      return false;
    }
    wait_idle();
    return true;
  }

  void close() {
    if (closing_) return;
    closing_ = true;
    server_.remove(*this);
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_close);
  }

  // Between requests (or before the first), with nothing being read or written.
  bool idle() const { return state_ == State::idle && !closing_; }
  std::uint64_t idle_since() const { return idle_since_; }

 private:
  enum class State { idle, reading, writing };

  static AdminConnection* self(llhttp_t* p) { return static_cast<AdminConnection*>(p->data); }

  static const llhttp_settings_t& settings() {
    static const llhttp_settings_t s = [] {
      llhttp_settings_t x;
      llhttp_settings_init(&x);
      x.on_message_begin = [](llhttp_t* p) -> int {
        auto* c = self(p);
        c->url_.clear();
        c->head_bytes_ = 0;
        c->body_bytes_ = 0;
        return 0;
      };
      x.on_url = [](llhttp_t* p, const char* at, std::size_t len) -> int {
        auto* c = self(p);
        if (!c->count_head(len)) return -1;
        c->url_.append(at, len);
        return 0;
      };
      x.on_header_field = [](llhttp_t* p, const char*, std::size_t len) -> int {
        return self(p)->count_head(len + 4) ? 0 : -1;  // ": " and CRLF
      };
      x.on_header_value = [](llhttp_t* p, const char*, std::size_t len) -> int {
        return self(p)->count_head(len) ? 0 : -1;
      };
      x.on_body = [](llhttp_t* p, const char*, std::size_t len) -> int {
        auto* c = self(p);
        c->body_bytes_ += len;
        if (c->body_bytes_ <= AdminLimits::kMaxBodyBytes) return 0;
        c->error_status_ = 413;
        return -1;
      };
      x.on_message_complete = [](llhttp_t* p) -> int {
        auto* c = self(p);
        c->complete_ = true;
        c->keep_alive_ = llhttp_should_keep_alive(p) != 0;
        return HPE_PAUSED;
      };
      return x;
    }();
    return s;
  }

  bool count_head(std::size_t len) {
    head_bytes_ += len;
    if (head_bytes_ <= AdminLimits::kMaxHeadBytes) return true;
    error_status_ = 431;
    return false;
  }

  bool read() {
    if (reading_) return true;
    if (uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc, on_read) != 0) return false;
    reading_ = true;
    return true;
  }

  void stop_reading() {
    if (!reading_) return;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    reading_ = false;
  }

  void arm(std::uint64_t ms) {
    if (uv_timer_start(&timer_, on_timer, ms, 0) != 0) close();
  }

  void wait_idle() {
    state_ = State::idle;
    idle_since_ = ++server_.idle_sequence_;  // an order, finer than the loop's clock
    arm(server_.limits_.idle_timeout_ms);
  }

  static void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
    auto* c = static_cast<AdminConnection*>(h->data);
    buf->base = c->buffer_;
    buf->len = sizeof c->buffer_;
  }

  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
    auto* c = static_cast<AdminConnection*>(s->data);
    if (c->closing_ || nread == 0) return;
    if (nread < 0) {  // EOF or error: nothing more will be asked
      c->close();
      return;
    }
    c->handle(buf->base, static_cast<std::size_t>(nread));
  }

  // Parses `data`; answers the first request completed in it and keeps the rest for later.
  void handle(const char* data, std::size_t len) {
    if (state_ == State::idle) {
      // A request has begun: it must be complete within the header timeout.
      state_ = State::reading;
      arm(server_.limits_.header_timeout_ms);
    }
    llhttp_errno_t err = llhttp_execute(&parser_, data, len);
    if (closing_) return;
    if (err == HPE_PAUSED && complete_) {
      const char* rest = llhttp_get_error_pos(&parser_);
      std::size_t rest_len = rest ? static_cast<std::size_t>(data + len - rest) : 0;
      pending_.assign(rest ? rest : data, rest_len);  // `data` may be pending_ itself: copy
      complete_ = false;
      llhttp_resume(&parser_);
      respond();
      return;
    }
    if (err != HPE_OK) {
      int status = error_status_ ? error_status_ : 400;
      const char* body = status == 431   ? "request head too large\n"
                         : status == 413 ? "request body too large\n"
                                         : "bad request\n";
      keep_alive_ = false;
      reply(status, "text/plain", body);
    }
  }

  void respond() {
    std::string_view path = target_path(url_);
    bool get = parser_.method == HTTP_GET || parser_.method == HTTP_HEAD;
    head_ = parser_.method == HTTP_HEAD;
    if (!get) return reply(405, "text/plain", "method not allowed\n");
    const AdminHandlers& h = server_.handlers_;
    if (path == "/metrics")
      return reply(200, "text/plain; version=0.0.4; charset=utf-8", h.metrics());
    if (path == "/healthz") {
      bool live = h.live();
      return reply(live ? 200 : 503, "text/plain", live ? "ok\n" : "event loops stalled\n");
    }
    if (path == "/ready") {
      bool ready = h.ready();
      return reply(ready ? 200 : 503, "text/plain", ready ? "ready\n" : "not ready\n");
    }
    if (path == "/") {
      // Self-contained: the page may run its own inline script and style and talk to this
      // port, nothing else (no frames, no other origins).
      return reply(200, "text/html; charset=utf-8", status_page_html(),
                   "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
                   "style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'\r\n"
                   "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n");
    }
    if (path == "/favicon.ico") return reply(204, "", "");  // asked for by the page's browser
    if (path == "/status") return reply(200, "application/json", h.status());
    if (path == "/status/history" && h.history)
      return reply(200, "application/json", h.history());
    if (path == "/config") return reply(200, "application/json", h.config());
    reply(404, "text/plain", "not found\n");
  }

  void reply(int status, const char* type, const std::string& body, const char* extra = "") {
    state_ = State::writing;
    stop_reading();  // the next request waits for this reply (pipelining: in order)
    arm(server_.limits_.idle_timeout_ms);  // a client that does not take its reply goes
    out_ = "HTTP/1.1 " + std::to_string(status) + " " + status_reason(status) + "\r\n";
    if (status != 204)  // a 204 has no body and no Content-Length (RFC 9110 8.6)
      out_ += std::string("Content-Type: ") + type +
              "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    out_ += extra;
    if (!keep_alive_)
      out_ += "Connection: close\r\n";
    else if (parser_.http_minor == 0)
      out_ += "Connection: keep-alive\r\n";
    out_ += "\r\n";
    if (!head_) out_ += body;
    head_ = false;
    uv_buf_t buf = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
    write_.data = this;
    if (uv_write(&write_, reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1, on_write) != 0) close();
  }

  static void on_write(uv_write_t* req, int status) {
    auto* c = static_cast<AdminConnection*>(req->data);
    if (c->closing_) return;
    if (status < 0 || !c->keep_alive_) {
      c->close();
      return;
    }
    c->out_.clear();
    c->wait_idle();
    if (!c->pending_.empty()) {
      std::string next;
      next.swap(c->pending_);
      c->handle(next.data(), next.size());
      if (c->closing_ || c->state_ == State::writing) return;
    }
    if (!c->read()) c->close();
  }

  static void on_timer(uv_timer_t* t) {
    auto* c = static_cast<AdminConnection*>(t->data);
    if (c->closing_) return;
    if (c->state_ == State::reading) {
      c->keep_alive_ = false;
      c->reply(408, "text/plain", "request timeout\n");
      return;
    }
    c->close();  // idle, or a reply the client does not take
  }

  static void on_close(uv_handle_t* h) {
    auto* c = static_cast<AdminConnection*>(h->data);
    if (--c->open_handles_ == 0) delete c;
  }

  AdminServer& server_;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};
  uv_write_t write_{};
  llhttp_t parser_{};
  int open_handles_ = 2;
  State state_ = State::idle;
  std::uint64_t idle_since_ = 0;
  std::string url_;
  std::string out_;
  std::string pending_;
  std::size_t head_bytes_ = 0;
  std::size_t body_bytes_ = 0;
  int error_status_ = 0;
  char buffer_[16 * 1024];
  bool complete_ = false;
  bool keep_alive_ = true;
  bool reading_ = false;
  bool closing_ = false;
  bool head_ = false;
};

AdminServer::AdminServer(uv_loop_t* loop, AdminHandlers handlers, AdminLimits limits)
    : loop_(loop), handlers_(std::move(handlers)), limits_(limits) {}

AdminServer::~AdminServer() { close(); }

bool AdminServer::listen(const Address& address, std::string& error) {
  int fd = open_listen_socket(address, false, 128, bound_, error);
  if (fd < 0) return false;
  uv_tcp_init(loop_, &server_);
  server_.data = this;
  int rc = uv_tcp_open(&server_, fd);
  if (rc != 0) ::close(fd);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&server_), 128, on_connection);
  open_ = true;
  if (rc != 0) {
    error = std::string("admin listener: ") + uv_strerror(rc);
    return false;
  }
  return true;
}

void AdminServer::close() {
  closed_ = true;
  if (open_) {
    open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&server_), nullptr);
  }
  while (!connections_.empty()) (*connections_.begin())->close();  // removes itself
}

void AdminServer::add(AdminConnection& c) { connections_.insert(&c); }
void AdminServer::remove(AdminConnection& c) { connections_.erase(&c); }

void AdminServer::on_connection(uv_stream_t* listener, int status) {
  if (status < 0) return;
  auto* server = static_cast<AdminServer*>(listener->data);
  auto* conn = new AdminConnection(*server);
  server->add(*conn);
  if (!conn->start(listener)) return;
  if (server->connections_.size() > server->limits_.max_connections) {
    // Over the limit: the connection idle the longest makes room, so that connections held
    // open without a request cannot lock probes and scrapes out. With none idle, the new
    // connection was accepted only to be closed, so the backlog drains.
    if (AdminConnection* victim = server->oldest_idle(conn)) {
      victim->close();
      return;
    }
    conn->close();
    if (server->handlers_.refused) server->handlers_.refused();
  }
}

AdminConnection* AdminServer::oldest_idle(const AdminConnection* except) const {
  AdminConnection* oldest = nullptr;
  for (AdminConnection* c : connections_) {
    if (c == except || !c->idle()) continue;
    if (!oldest || c->idle_since() < oldest->idle_since()) oldest = c;
  }
  return oldest;
}

}  // namespace bulwark
