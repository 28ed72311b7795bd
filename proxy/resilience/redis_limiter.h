// Global rate limits: one GCRA bucket per key in Redis, shared by every Bulwark replica. Each
// worker keeps its own connections (hiredis on the worker's libuv loop, one RedisNode per
// server, redis_node.h); decisions are Lua calls (EVALSHA, falling back to EVAL when Redis
// lost the script) pipelined on them. Redis's own clock is used, so replicas with skewed
// clocks agree. Where a decision goes depends on `redis.mode`:
// - standalone: the one server;
// - cluster: the master owning the key's slot (CRC16, hash tags: redis_slots.h), from a slot
//   map read with CLUSTER SLOTS from any node once one answers, again every 10 s and at once
//   after a MOVED; a MOVED or ASK reply sends the decision on to the node named (ASK with
//   ASKING first), with its deadline unchanged, at most twice;
// - sentinel: the master the sentinels name (SENTINEL get-master-addr-by-name), asked of the
//   first sentinel that answers at start, every second, and at once when the master's
//   connection fails or answers READONLY; a new address replaces the master's connection.
// No decision waits longer than `redis.timeout`; when Redis cannot be asked or fails, the
// caller applies on_redis_failure (see redis_node.h for the breaker and reconnects).
#pragma once

#include <uv.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "admin/stats.h"
#include "config/config.h"
#include "core/intrusive_list.h"
#include "resilience/rate_limiter.h"

namespace bulwark {

class RedisNode;
struct RedisRedirect;

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
    RedisNode* node = nullptr;             // where it was last sent
    RateDecisionWaiter* waiter = nullptr;  // null: answered or cancelled, the reply is dropped
    ListHook<Pending> wait_hook;           // in its node's waiting list while a waiter waits
    std::uint64_t deadline_ms = 0;
    std::uint64_t sent_ns = 0;  // to its current node
    char key[320];
    std::size_t key_len = 0;
    char interval[32];
    char tolerance[32];
    int redirects = 0;
    bool retried_with_eval = false;
    bool timed_out = false;  // its waiter heard a failure: a reply now is too late to count
  };

  // `stats` (may be null): the worker's, for per-server counters and the replica count.
  RedisRateLimiter(uv_loop_t* loop, const RedisConfig& config, Counter& errors,
                   WorkerStats* stats = nullptr);
  // A standalone Redis without a password (tests).
  RedisRateLimiter(uv_loop_t* loop, std::string host, int port, std::uint64_t timeout_ms,
                   Counter& errors);
  ~RedisRateLimiter();
  RedisRateLimiter(const RedisRateLimiter&) = delete;
  RedisRateLimiter& operator=(const RedisRateLimiter&) = delete;

  // Asks Redis; the answer (or the failure, at the latest after the timeout) goes to `waiter`
  // later, unless cancelled first. nullptr: Redis cannot be asked now (no usable connection,
  // its breaker open, the connection going away): decide without it, at once. Never calls a
  // waiter back itself.
  Pending* decide(std::string_view key, double rate_per_s, double burst,
                  RateDecisionWaiter* waiter);
  // The waiter gives up (it went away): its answer is dropped.
  void cancel(Pending* pending);
  // A decision could be sent now (some node that would take it answers).
  bool usable() const;
  void close();
  // Refused AUTH replies so far (all nodes).
  std::uint64_t auth_failures() const { return auth_failures_; }
  // Replicas sharing the global limits: redis.replicas, or (auto) the number of Bulwark
  // processes that registered in Redis within the last 10 s (each refreshes every 2 s; the
  // last count is kept while Redis is out); at least 1.
  int replicas() const { return config_.replicas > 0 ? config_.replicas : learned_replicas_; }
  // This replica's share of a global quota while Redis cannot be asked.
  double share() const { return 1.0 / replicas(); }

  static const char* script();  // the GCRA script (for tests and docs)

  // For RedisNode.
  void free_pending(Pending* p);
  void redirect(RedisNode& from, Pending* p, const RedisRedirect& to);
  void node_ready(RedisNode& node);
  void node_down(RedisNode& node);
  void auth_failed() { ++auth_failures_; }

 private:
  Pending* new_pending();
  RedisNode* data_node(const std::string& host, int port);  // found or made
  RedisNode* node_for(std::string_view key);
  void refresh_slots();
  void ask_sentinels();
  void set_master(const std::string& host, int port);
  static void on_tick(uv_timer_t* t);
  void register_replica();

  uv_loop_t* loop_;
  RedisConfig config_;
  Counter& errors_;
  WorkerStats* stats_;
  std::vector<std::unique_ptr<RedisNode>> nodes_;      // data nodes (masters)
  std::vector<std::unique_ptr<RedisNode>> sentinels_;  // mode sentinel
  std::vector<std::unique_ptr<RedisNode>> retired_;    // replaced masters, freed on the tick
  RedisNode* master_ = nullptr;                         // mode sentinel: the current master
  std::array<std::int16_t, 16384> slots_{};            // mode cluster: index into nodes_, -1
  bool slots_known_ = false, refreshing_ = false, asking_sentinels_ = false;
  std::uint64_t last_refresh_ms_ = 0;
  std::uint64_t auth_failures_ = 0;
  uv_timer_t* tick_ = nullptr;  // cluster: refresh the slot map; sentinel: ask for the master
  uv_timer_t* members_ = nullptr;  // replicas: auto: register this process, count the others
  int learned_replicas_ = 1;
  bool registering_ = false;
  bool closing_ = false;
  std::vector<Pending*> free_;  // pending records are reused
  std::vector<Pending*> all_;
};

}  // namespace bulwark
