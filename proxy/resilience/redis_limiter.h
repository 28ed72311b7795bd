// Global rate limits: one GCRA bucket per key in Redis, shared by every Bulwark replica. Each
// worker keeps its own connection (hiredis on the worker's libuv loop); decisions are Lua
// calls (EVALSHA, falling back to EVAL when Redis lost the script) pipelined on it. Redis's
// own clock is used, so replicas with skewed clocks agree. A breaker on the connection stops
// asking after repeated errors or timeouts; the caller then applies on_redis_failure.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "admin/stats.h"
#include "resilience/rate_limiter.h"

struct redisAsyncContext;

namespace bulwark {

class RateDecisionWaiter {
 public:
  // ok=false: Redis answered with an error (the decision is not usable).
  virtual void on_rate_decision(bool ok, const RateDecision& decision) = 0;

 protected:
  ~RateDecisionWaiter() = default;
};

class RedisRateLimiter {
 public:
  struct Pending;  // a decision in flight

  RedisRateLimiter(uv_loop_t* loop, std::string host, int port, Counter& errors);
  ~RedisRateLimiter();
  RedisRateLimiter(const RedisRateLimiter&) = delete;
  RedisRateLimiter& operator=(const RedisRateLimiter&) = delete;

  // Asks Redis; the answer goes to `waiter` unless cancelled first. nullptr: Redis cannot be
  // asked now (not connected, or its breaker is open): decide without it, at once.
  Pending* decide(std::string_view key, double rate_per_s, double burst,
                  RateDecisionWaiter* waiter);
  // The waiter gives up (timeout, or it went away). `timed_out` counts as a Redis failure.
  void cancel(Pending* pending, bool timed_out);
  bool connected() const { return connected_; }
  void close();

  static const char* script();  // the GCRA script (for tests and docs)

 private:
  void connect();
  void send(Pending* p);
  void on_reply(Pending* p, void* reply);
  void failure();
  void success();
  static void on_connect(const redisAsyncContext* c, int status);
  static void on_disconnect(const redisAsyncContext* c, int status);
  static void on_reconnect_timer(uv_timer_t* t);
  static void reply_cb(redisAsyncContext* c, void* reply, void* privdata);
  static void script_loaded_cb(redisAsyncContext* c, void* reply, void* privdata);
  Pending* new_pending();
  void free_pending(Pending* p);

  uv_loop_t* loop_;
  std::string host_;
  int port_;
  Counter& errors_;
  redisAsyncContext* ctx_ = nullptr;
  bool connected_ = false;
  bool closing_ = false;
  std::string sha_;  // of the loaded script; empty: use EVAL
  uv_timer_t* reconnect_timer_;
  std::uint64_t reconnect_delay_ms_ = 100;
  int consecutive_failures_ = 0;
  std::uint64_t open_until_ms_ = 0;  // breaker on the connection
  std::vector<Pending*> free_;       // pending records are reused
  std::vector<Pending*> all_;
};

}  // namespace bulwark
