#include "admin/admin_server.h"

#include <llhttp.h>

#include <cstring>

#include "http/headers.h"
#include "net/listener.h"

namespace bulwark {

// One admin request per connection; answered and closed.
class AdminConnection {
 public:
  explicit AdminConnection(AdminServer& server) : server_(server) {
    uv_tcp_init(server.loop_, &tcp_);
    tcp_.data = this;
    llhttp_settings_init(&settings_);
    settings_.on_url = [](llhttp_t* p, const char* at, std::size_t len) {
      auto* c = static_cast<AdminConnection*>(p->data);
      if (c->url_.size() + len > 4096) return -1;
      c->url_.append(at, len);
      return 0;
    };
    settings_.on_message_complete = [](llhttp_t* p) -> int {
      static_cast<AdminConnection*>(p->data)->complete_ = true;
      return HPE_PAUSED;
    };
    llhttp_init(&parser_, HTTP_REQUEST, &settings_);
    parser_.data = this;
  }

  void start(uv_stream_t* listener) {
    if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&tcp_)) != 0) {
      close();
      return;
    }
    uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc, on_read);
  }

 private:
  static void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
    auto* c = static_cast<AdminConnection*>(h->data);
    buf->base = c->buffer_;
    buf->len = sizeof c->buffer_;
  }

  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
    auto* c = static_cast<AdminConnection*>(s->data);
    if (c->responded_) return;
    if (nread < 0) {
      c->close();
      return;
    }
    if (nread == 0) return;
    llhttp_errno_t err = llhttp_execute(&c->parser_, buf->base, static_cast<std::size_t>(nread));
    if (c->complete_) {
      c->respond();
    } else if (err != HPE_OK) {
      c->reply(400, "text/plain", "bad request\n");
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
    if (path == "/status") return reply(200, "application/json", h.status());
    if (path == "/config") return reply(200, "application/json", h.config());
    reply(404, "text/plain", "not found\n");
  }

  void reply(int status, const char* type, const std::string& body) {
    responded_ = true;
    out_ = "HTTP/1.1 " + std::to_string(status) + " " + status_reason(status) +
           "\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n";
    if (!head_) out_ += body;
    uv_buf_t buf = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
    write_.data = this;
    if (uv_write(&write_, reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1, on_write) != 0) close();
  }

  static void on_write(uv_write_t* req, int) { static_cast<AdminConnection*>(req->data)->close(); }

  void close() {
    if (closing_) return;
    closing_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_),
             [](uv_handle_t* h) { delete static_cast<AdminConnection*>(h->data); });
  }

  AdminServer& server_;
  uv_tcp_t tcp_{};
  uv_write_t write_{};
  llhttp_t parser_{};
  llhttp_settings_t settings_{};
  std::string url_;
  std::string out_;
  char buffer_[4096];
  bool complete_ = false;
  bool responded_ = false;
  bool closing_ = false;
  bool head_ = false;
};

AdminServer::AdminServer(uv_loop_t* loop, AdminHandlers handlers)
    : loop_(loop), handlers_(std::move(handlers)) {}

bool AdminServer::listen(const Address& address, std::string& error) {
  int fd = open_listen_socket(address, false, 128, bound_, error);
  if (fd < 0) return false;
  uv_tcp_init(loop_, &server_);
  server_.data = this;
  int rc = uv_tcp_open(&server_, fd);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&server_), 128, on_connection);
  open_ = true;
  if (rc != 0) {
    error = std::string("admin listener: ") + uv_strerror(rc);
    return false;
  }
  return true;
}

void AdminServer::close() {
  if (!open_) return;
  open_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&server_), nullptr);
}

void AdminServer::on_connection(uv_stream_t* listener, int status) {
  if (status < 0) return;
  auto* server = static_cast<AdminServer*>(listener->data);
  auto* conn = new AdminConnection(*server);
  conn->start(listener);
}

}  // namespace bulwark
