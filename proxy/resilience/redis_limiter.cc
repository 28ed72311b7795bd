#include "resilience/redis_limiter.h"

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <cstdio>
#include <cstring>

#include "core/log.h"

namespace bulwark {

namespace {
constexpr int kBreakerFailures = 3;
constexpr std::uint64_t kBreakerOpenMs = 1000;
constexpr std::uint64_t kConnectTimeoutMs = 500;

// KEYS[1]: bucket; ARGV[1]: microseconds per token; ARGV[2]: burst tolerance in microseconds.
// Returns {allowed, remaining, reset_us, retry_after_us}: the arithmetic of gcra() in
// rate_limiter.cc, on Redis's clock.
const char kScript[] = R"lua(
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local nxt = tat + interval
if nxt - now > tolerance then
  return {0, 0, tat - now, math.ceil(nxt - tolerance - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
return {1, math.floor((tolerance - (nxt - now)) / interval + 1e-9), nxt - now, 0}
)lua";
}  // namespace

struct RedisRateLimiter::Pending {
  RedisRateLimiter* owner = nullptr;
  RateDecisionWaiter* waiter = nullptr;  // null: cancelled, the reply is dropped
  char key[320];
  std::size_t key_len = 0;
  char interval[32];
  char tolerance[32];
  bool retried_with_eval = false;
};

const char* RedisRateLimiter::script() { return kScript; }

RedisRateLimiter::RedisRateLimiter(uv_loop_t* loop, std::string host, int port, Counter& errors)
    : loop_(loop),
      host_(std::move(host)),
      port_(port),
      errors_(errors),
      reconnect_timer_(new uv_timer_t) {
  uv_timer_init(loop_, reconnect_timer_);
  reconnect_timer_->data = this;
  connect();
}

RedisRateLimiter::~RedisRateLimiter() {
  close();
  for (Pending* p : all_) delete p;
}

void RedisRateLimiter::connect() {
  if (closing_) return;
  ctx_ = redisAsyncConnect(host_.c_str(), port_);
  if (!ctx_ || ctx_->err) {
    if (ctx_) redisAsyncFree(ctx_);
    ctx_ = nullptr;
    failure();
    uv_timer_start(reconnect_timer_, on_reconnect_timer, reconnect_delay_ms_, 0);
    return;
  }
  ctx_->data = this;
  redisLibuvAttach(ctx_, loop_);
  redisAsyncSetConnectCallback(ctx_, on_connect);
  redisAsyncSetDisconnectCallback(ctx_, on_disconnect);
  // hiredis' libuv adapter drops poll errors, so a refused connect is never reported:
  // give the connect a deadline of our own.
  uv_timer_start(reconnect_timer_, on_reconnect_timer, kConnectTimeoutMs, 0);
}

void RedisRateLimiter::on_connect(const redisAsyncContext* c, int status) {
  auto* self = static_cast<RedisRateLimiter*>(c->data);
  if (status != REDIS_OK) {
    // hiredis frees the context after this callback.
    self->ctx_ = nullptr;
    self->connected_ = false;
    self->errors_.add();
    if (!self->closing_) {
      uv_timer_start(self->reconnect_timer_, on_reconnect_timer, self->reconnect_delay_ms_, 0);
      self->reconnect_delay_ms_ = std::min<std::uint64_t>(self->reconnect_delay_ms_ * 2, 2000);
    }
    return;
  }
  uv_timer_stop(self->reconnect_timer_);
  self->connected_ = true;
  self->reconnect_delay_ms_ = 100;
  self->consecutive_failures_ = 0;
  self->open_until_ms_ = 0;
  log_info("redis " + self->host_ + ":" + std::to_string(self->port_) + " connected");
  const char* argv[] = {"SCRIPT", "LOAD", kScript};
  std::size_t lens[] = {6, 4, sizeof kScript - 1};
  redisAsyncCommandArgv(self->ctx_, script_loaded_cb, nullptr, 3, argv, lens);
}

void RedisRateLimiter::script_loaded_cb(redisAsyncContext* c, void* r, void*) {
  auto* self = static_cast<RedisRateLimiter*>(c->data);
  auto* reply = static_cast<redisReply*>(r);
  if (reply && reply->type == REDIS_REPLY_STRING) self->sha_.assign(reply->str, reply->len);
}

void RedisRateLimiter::on_disconnect(const redisAsyncContext* c, int) {
  auto* self = static_cast<RedisRateLimiter*>(c->data);
  self->ctx_ = nullptr;  // freed by hiredis
  self->connected_ = false;
  self->sha_.clear();
  if (self->closing_) return;
  self->errors_.add();
  log_warn("redis " + self->host_ + ":" + std::to_string(self->port_) +
           " disconnected; reconnecting");
  uv_timer_start(self->reconnect_timer_, on_reconnect_timer, self->reconnect_delay_ms_, 0);
}

void RedisRateLimiter::on_reconnect_timer(uv_timer_t* t) {
  auto* self = static_cast<RedisRateLimiter*>(t->data);
  if (self->closing_) return;
  if (self->ctx_ && !self->connected_) {  // the connect did not complete in time
    redisAsyncContext* c = self->ctx_;
    self->ctx_ = nullptr;
    redisAsyncFree(c);
    self->errors_.add();
    uv_timer_start(self->reconnect_timer_, on_reconnect_timer, self->reconnect_delay_ms_, 0);
    self->reconnect_delay_ms_ = std::min<std::uint64_t>(self->reconnect_delay_ms_ * 2, 2000);
    return;
  }
  if (!self->ctx_) self->connect();
}

RedisRateLimiter::Pending* RedisRateLimiter::new_pending() {
  if (!free_.empty()) {
    Pending* p = free_.back();
    free_.pop_back();
    return p;
  }
  all_.push_back(new Pending());
  return all_.back();
}

void RedisRateLimiter::free_pending(Pending* p) {
  p->waiter = nullptr;
  p->retried_with_eval = false;
  free_.push_back(p);
}

RedisRateLimiter::Pending* RedisRateLimiter::decide(std::string_view key, double rate_per_s,
                                                    double burst, RateDecisionWaiter* waiter) {
  if (!connected_ || !ctx_) return nullptr;
  if (open_until_ms_ && uv_now(loop_) < open_until_ms_) return nullptr;  // breaker open
  Pending* p = new_pending();
  p->owner = this;
  p->waiter = waiter;
  p->key_len = std::min(key.size(), sizeof p->key);
  std::memcpy(p->key, key.data(), p->key_len);
  double interval = 1e6 / rate_per_s;
  std::snprintf(p->interval, sizeof p->interval, "%.3f", interval);
  std::snprintf(p->tolerance, sizeof p->tolerance, "%.3f", interval * burst);
  send(p);
  return p;
}

void RedisRateLimiter::send(Pending* p) {
  bool sha = !sha_.empty() && !p->retried_with_eval;
  const char* argv[] = {sha ? "EVALSHA" : "EVAL",
                        sha ? sha_.c_str() : kScript,
                        "1",
                        p->key,
                        p->interval,
                        p->tolerance};
  std::size_t lens[] = {sha ? 7u : 4u,
                        sha ? sha_.size() : sizeof kScript - 1,
                        1,
                        p->key_len,
                        std::strlen(p->interval),
                        std::strlen(p->tolerance)};
  if (redisAsyncCommandArgv(ctx_, reply_cb, p, 6, argv, lens) != REDIS_OK) on_reply(p, nullptr);
}

void RedisRateLimiter::reply_cb(redisAsyncContext*, void* reply, void* privdata) {
  auto* p = static_cast<Pending*>(privdata);
  p->owner->on_reply(p, reply);
}

void RedisRateLimiter::on_reply(Pending* p, void* r) {
  auto* reply = static_cast<redisReply*>(r);
  if (reply && reply->type == REDIS_REPLY_ERROR && !p->retried_with_eval && connected_ && ctx_ &&
      std::strncmp(reply->str, "NOSCRIPT", 8) == 0) {
    p->retried_with_eval = true;  // Redis lost the script (restart, SCRIPT FLUSH): send it whole
    sha_.clear();
    send(p);
    const char* argv[] = {"SCRIPT", "LOAD", kScript};
    std::size_t lens[] = {6, 4, sizeof kScript - 1};
    redisAsyncCommandArgv(ctx_, script_loaded_cb, nullptr, 3, argv, lens);
    return;
  }
  bool ok = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 4;
  RateDecision d;
  if (ok) {
    for (std::size_t i = 0; i < 4; ++i) ok = ok && reply->element[i]->type == REDIS_REPLY_INTEGER;
  }
  if (ok) {
    d.allowed = reply->element[0]->integer == 1;
    d.remaining = static_cast<std::uint64_t>(std::max<long long>(0, reply->element[1]->integer));
    d.reset_us = static_cast<std::uint64_t>(std::max<long long>(0, reply->element[2]->integer));
    d.retry_after_us =
        static_cast<std::uint64_t>(std::max<long long>(0, reply->element[3]->integer));
    success();
  } else if (p->waiter) {
    failure();
  }
  RateDecisionWaiter* waiter = p->waiter;
  free_pending(p);
  if (waiter) waiter->on_rate_decision(ok, d);
}

void RedisRateLimiter::cancel(Pending* p, bool timed_out) {
  p->waiter = nullptr;  // freed when its reply (or the disconnect) arrives
  if (timed_out) failure();
}

void RedisRateLimiter::failure() {
  errors_.add();
  if (++consecutive_failures_ >= kBreakerFailures && open_until_ms_ <= uv_now(loop_)) {
    open_until_ms_ = uv_now(loop_) + kBreakerOpenMs;
    log_warn("redis " + host_ + ":" + std::to_string(port_) + ": " +
             std::to_string(consecutive_failures_) + " failures in a row; not asking for " +
             std::to_string(kBreakerOpenMs) + "ms, reconnecting");
    // The connection may be dead without hiredis knowing (its libuv adapter ignores poll
    // errors such as a reset): start over. Inside a hiredis callback the free is deferred;
    // on_disconnect then schedules the reconnect.
    if (ctx_ && connected_) redisAsyncFree(ctx_);
  }
}

void RedisRateLimiter::success() {
  consecutive_failures_ = 0;
  open_until_ms_ = 0;
}

void RedisRateLimiter::close() {
  if (closing_) return;
  closing_ = true;
  if (ctx_) {
    redisAsyncContext* c = ctx_;
    ctx_ = nullptr;
    redisAsyncFree(c);  // calls every pending callback with a null reply
  }
  uv_close(reinterpret_cast<uv_handle_t*>(reconnect_timer_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

}  // namespace bulwark
