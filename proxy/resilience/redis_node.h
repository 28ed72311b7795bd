// One Redis server as the global rate limit sees it: one hiredis connection on the worker's
// loop, its handshake, its breaker, and the decisions in flight on it with their deadlines.
// RedisRateLimiter (redis_limiter.h) owns one node (standalone), one per master (cluster), or
// the master plus one per sentinel (sentinel), and routes each decision to a node.
//
// What a node promises when its Redis is slow, hung or gone:
// - no decision waits longer than `timeout_ms` (one timer for all of them: they share the
//   timeout, so their deadlines come in order);
// - after 3 failures in a row (errors, timeouts) Redis is not asked for 1 s, and the
//   connection is dropped and made again;
// - a connection is used only once Redis has answered on it (AUTH when a password is set,
//   then SCRIPT LOAD — PING for a sentinel): a TCP connect that a hung Redis's kernel accepts
//   into its backlog does not count, so the 1 s pause holds across reconnects;
// - a host name is resolved without blocking the loop (uv_getaddrinfo), again on every
//   reconnect;
// - reconnects back off (100 ms doubling to 2 s); an outage is logged once when it starts
//   (also at start-up) and once when Redis answers again; a refused AUTH is logged as such.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "admin/stats.h"
#include "core/intrusive_list.h"
#include "resilience/redis_limiter.h"

struct redisAsyncContext;
struct redisReply;

namespace bulwark {

class RedisNode {
 public:
  enum class Kind { data, sentinel };  // sentinel: no script, PING as the handshake
  struct Auth {
    std::string username, password;  // empty password: no AUTH
  };

  // `stats` (may be null): this server's counters in the worker's stats.
  RedisNode(RedisRateLimiter& owner, uv_loop_t* loop, std::string host, int port, Kind kind,
            Auth auth, std::uint64_t timeout_ms, Counter& errors, RedisNodeStats* stats);
  ~RedisNode();
  RedisNode(const RedisNode&) = delete;
  RedisNode& operator=(const RedisNode&) = delete;

  // Sends a decision (its key, interval and tolerance are set; its deadline too when it was
  // redirected here, else it gets now + timeout). False: the node cannot take it now.
  bool send_decision(RedisRateLimiter::Pending* p, bool asking);
  void cancel(RedisRateLimiter::Pending* p);
  // Any other command (CLUSTER SLOTS, SENTINEL ...): `done` gets the reply, or null when the
  // connection went away first. False: not usable now (`done` is not called).
  bool command(const std::vector<std::string>& argv, std::function<void(redisReply*)> done);
  // Redis answered on the current connection and the node's breaker is closed.
  bool usable() const;
  // Closes the connection; decisions still waiting hear a failure when `notify` is set, else
  // nothing (the whole limiter is going away).
  void close(bool notify);

  const std::string& host() const { return host_; }
  int port() const { return port_; }
  std::string address() const;
  bool ever_ready() const { return ever_ready_; }

 private:
  void connect();
  void connect_to(const std::string& ip);
  bool send(RedisRateLimiter::Pending* p, bool asking);
  void on_reply(RedisRateLimiter::Pending* p, redisReply* reply);
  void on_handshake(redisReply* reply, bool auth);
  void failure();
  void success();
  void drop_connection(const std::string& why);
  void schedule_reconnect();
  void report_down(const std::string& why);
  void arm_wait_timer();
  void insert_waiting(RedisRateLimiter::Pending* p);
  static void on_connect(const redisAsyncContext* c, int status);
  static void on_disconnect(const redisAsyncContext* c, int status);
  static void on_reconnect_timer(uv_timer_t* t);
  static void on_wait_timer(uv_timer_t* t);
  static void reply_cb(redisAsyncContext* c, void* reply, void* privdata);
  static void script_loaded_cb(redisAsyncContext* c, void* reply, void* privdata);
  static void auth_cb(redisAsyncContext* c, void* reply, void* privdata);
  static void command_cb(redisAsyncContext* c, void* reply, void* privdata);
  std::string name() const;
  void count_error();
  void set_up(bool up);

  RedisRateLimiter& owner_;
  uv_loop_t* loop_;
  std::string host_;
  int port_;
  Kind kind_;
  Auth auth_;
  std::uint64_t timeout_ms_;
  Counter& errors_;
  RedisNodeStats* stats_;
  bool up_ = false;  // as counted in stats_->usable
  redisAsyncContext* ctx_ = nullptr;
  uv_getaddrinfo_t* resolving_ = nullptr;  // a name being resolved (owned by the callback)
  bool connected_ = false;  // TCP connected
  bool ready_ = false;      // and Redis answered the handshake: commands may be sent
  bool closing_ = false;
  bool down_reported_ = false;  // the current outage was logged
  bool ever_ready_ = false;
  std::string sha_;              // of the loaded script; empty: use EVAL
  uv_timer_t* reconnect_timer_;  // connect/handshake deadline, then reconnect back-off
  uv_timer_t* wait_timer_;       // the oldest decision's deadline
  std::uint64_t reconnect_delay_ms_ = 100;
  int consecutive_failures_ = 0;
  std::uint64_t open_until_ms_ = 0;  // breaker on the connection
  IntrusiveList<RedisRateLimiter::Pending, &RedisRateLimiter::Pending::wait_hook> waiting_;
};

}  // namespace bulwark
