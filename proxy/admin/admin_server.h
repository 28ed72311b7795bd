// The admin listener: / (the status page), /metrics, /healthz, /ready, /status,
// /status/history, /config. It runs on the main
// thread's loop, apart from the workers, so a scrape never delays a proxied request.
// Connections are kept alive (a scraper reuses its connection), pipelined requests are
// answered in order, and each connection is bounded: its request head in size, a request in
// time (header timeout), an idle connection in time (idle timeout), and the number open at
// once. close() ends every connection at once, so none can hold the process up at shutdown.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_set>

#include "net/address.h"

namespace bulwark {

struct AdminHandlers {
  std::function<std::string()> metrics;  // Prometheus text
  std::function<bool()> ready;
  std::function<bool()> live;
  std::function<std::string()> status;  // JSON
  std::function<std::string()> config;  // JSON
  std::function<std::string()> history;  // JSON: /status/history
  std::function<void()> refused;        // a connection was closed at once: the limit is reached
};

struct AdminLimits {
  std::uint64_t header_timeout_ms = 5000;  // from a request's first byte to its end
  std::uint64_t idle_timeout_ms = 60000;   // between requests, and for a reply to be taken
  std::uint64_t max_connections = 64;
  // A request head larger than this is answered 431 and the connection closed.
  static constexpr std::size_t kMaxHeadBytes = 8 * 1024;
  // Admin requests carry no body; one larger than this is answered 413 and closed.
  static constexpr std::size_t kMaxBodyBytes = 8 * 1024;
};

class AdminConnection;

class AdminServer {
 public:
  AdminServer(uv_loop_t* loop, AdminHandlers handlers, AdminLimits limits = {});
  ~AdminServer();
  // Binds and listens; returns false with `error` set.
  bool listen(const Address& address, std::string& error);
  // Closes the listener and every admin connection, in whatever state it is.
  void close();
  const Address& bound() const { return bound_; }
  std::size_t connections() const { return connections_.size(); }

 private:
  static void on_connection(uv_stream_t* server, int status);
  void add(AdminConnection& c);
  void remove(AdminConnection& c);
  // The connection idle the longest, other than `except`; null when none is idle.
  AdminConnection* oldest_idle(const AdminConnection* except) const;

  uv_loop_t* loop_;
  AdminHandlers handlers_;
  AdminLimits limits_;
  uv_tcp_t server_{};
  Address bound_;
  bool open_ = false;
  bool closed_ = false;
  std::unordered_set<AdminConnection*> connections_;
  std::uint64_t idle_sequence_ = 0;  // counts the times a connection became idle
  friend class AdminConnection;
};

}  // namespace bulwark
