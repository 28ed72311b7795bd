// Global rate limits: one GCRA bucket per key in Redis, shared by every Bulwark replica. Each
// worker keeps its own connection (hiredis on the worker's libuv loop); decisions are Lua
// calls (EVALSHA, falling back to EVAL when Redis lost the script) pipelined on it. Redis's
// own clock is used, so replicas with skewed clocks agree.
//
// What it promises when Redis is slow, hung or gone:
// - no decision waits longer than `timeout_ms` (one timer for all of them: they share the
//   timeout, so their deadlines come in order);
// - after 3 failures in a row (errors, timeouts) Redis is not asked for 1 s, and the
//   connection is dropped and made again;
// - a connection is used for decisions only once Redis has answered on it (the SCRIPT LOAD
//   sent first): a TCP connect that a hung Redis's kernel accepts into its backlog does not
//   count, so the 1 s pause holds across reconnects, and a hung Redis costs requests nothing
//   after the first failures;
// - reconnects back off (100 ms doubling to 2 s); an outage is logged once when it starts
//   (also at start-up) and once when Redis answers again.
// Callers then apply on_redis_failure.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "admin/stats.h"
#include "core/intrusive_list.h"
#include "resilience/rate_limiter.h"

struct redisAsyncContext;

namespace bulwark {

class RateDecisionWaiter {
 public:
  // ok=false: Redis failed (error, timeout, lost connection): the decision is not usable.
  // Always called from the event loop (a reply, a timer), never from inside decide().
  virtual void on_rate_decision(bool ok, const RateDecision& decision) = 0;

 protected:
  ~RateDecisionWaiter() = default;
};

class RedisRateLimiter {
 public:
  // A decision in flight. Owned by the limiter: it goes back to the free list when hiredis
  // has called back for it (reply, error or disconnect), whether or not a waiter is left.
  struct Pending {
    RedisRateLimiter* owner = nullptr;
    RateDecisionWaiter* waiter = nullptr;  // null: answered or cancelled, the reply is dropped
    ListHook<Pending> wait_hook;           // in waiting_ while a waiter waits
    std::uint64_t deadline_ms = 0;
    char key[320];
    std::size_t key_len = 0;
    char interval[32];
    char tolerance[32];
    bool retried_with_eval = false;
    bool timed_out = false;  // its waiter heard a failure: a reply now is too late to count
  };

  // `timeout_ms`: the longest a decision is waited for (redis.timeout).
  RedisRateLimiter(uv_loop_t* loop, std::string host, int port, std::uint64_t timeout_ms,
                   Counter& errors);
  ~RedisRateLimiter();
  RedisRateLimiter(const RedisRateLimiter&) = delete;
  RedisRateLimiter& operator=(const RedisRateLimiter&) = delete;

  // Asks Redis; the answer (or the failure, at the latest after timeout_ms) goes to `waiter`
  // later, unless cancelled first. nullptr: Redis cannot be asked now (no usable connection,
  // its breaker open, the connection going away): decide without it, at once. Never calls a
  // waiter back itself.
  Pending* decide(std::string_view key, double rate_per_s, double burst,
                  RateDecisionWaiter* waiter);
  // The waiter gives up (it went away): its answer is dropped.
  void cancel(Pending* pending);
  // Redis answered on the current connection and its breaker is closed.
  bool usable() const;
  void close();

  static const char* script();  // the GCRA script (for tests and docs)

 private:
  void connect();
  bool send(Pending* p);
  void on_reply(Pending* p, void* reply);
  void on_script_loaded(void* reply);
  void failure();
  void success();
  // Drops the current connection (if any) and schedules the next connect after the back-off.
  void drop_connection(const std::string& why);
  void schedule_reconnect();
  void report_down(const std::string& why);
  void arm_wait_timer();
  static void on_connect(const redisAsyncContext* c, int status);
  static void on_disconnect(const redisAsyncContext* c, int status);
  static void on_reconnect_timer(uv_timer_t* t);
  static void on_wait_timer(uv_timer_t* t);
  static void reply_cb(redisAsyncContext* c, void* reply, void* privdata);
  static void script_loaded_cb(redisAsyncContext* c, void* reply, void* privdata);
  Pending* new_pending();
  void free_pending(Pending* p);
  std::string name() const;

  uv_loop_t* loop_;
  std::string host_;
  int port_;
  std::uint64_t timeout_ms_;
  Counter& errors_;
  redisAsyncContext* ctx_ = nullptr;
  bool connected_ = false;  // TCP connected
  bool ready_ = false;      // and Redis answered on it: decisions may be sent
  bool closing_ = false;
  bool down_reported_ = false;  // the current outage was logged
  bool ever_ready_ = false;
  std::string sha_;              // of the loaded script; empty: use EVAL
  uv_timer_t* reconnect_timer_;  // connect/handshake deadline, then reconnect back-off
  uv_timer_t* wait_timer_;       // the oldest decision's deadline
  std::uint64_t reconnect_delay_ms_ = 100;
  int consecutive_failures_ = 0;
  std::uint64_t open_until_ms_ = 0;  // breaker on the connection
  std::vector<Pending*> free_;       // pending records are reused
  std::vector<Pending*> all_;
  IntrusiveList<Pending, &Pending::wait_hook> waiting_;  // by deadline (all share the timeout)
};

}  // namespace bulwark
