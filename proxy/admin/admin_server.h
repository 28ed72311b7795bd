// The admin listener: /metrics, /healthz, /ready, /status, /config. It runs on the main
// thread's loop, apart from the workers, so a scrape never delays a proxied request.
#pragma once

#include <uv.h>

#include <functional>
#include <string>

#include "net/address.h"

namespace bulwark {

struct AdminHandlers {
  std::function<std::string()> metrics;  // Prometheus text
  std::function<bool()> ready;
  std::function<bool()> live;
  std::function<std::string()> status;  // JSON
  std::function<std::string()> config;  // JSON
};

class AdminServer {
 public:
  AdminServer(uv_loop_t* loop, AdminHandlers handlers);
  // Binds and listens; returns false with `error` set.
  bool listen(const Address& address, std::string& error);
  void close();
  const Address& bound() const { return bound_; }

 private:
  static void on_connection(uv_stream_t* server, int status);
  uv_loop_t* loop_;
  AdminHandlers handlers_;
  uv_tcp_t server_{};
  Address bound_;
  bool open_ = false;
  friend class AdminConnection;
};

}  // namespace bulwark
