#include "resilience/redis_limiter.h"

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "core/log.h"

namespace bulwark {

namespace {
constexpr int kBreakerFailures = 3;
constexpr std::uint64_t kBreakerOpenMs = 1000;
// A new connection must be made and answer its first command (SCRIPT LOAD) within this.
constexpr std::uint64_t kHandshakeTimeoutMs = 500;
constexpr std::uint64_t kReconnectMinMs = 100;
constexpr std::uint64_t kReconnectMaxMs = 2000;

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

// hiredis refuses commands on a context that is disconnecting or being freed; its pending
// callbacks are then being called with null replies.
bool going_away(const redisAsyncContext* c) {
  return (c->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)) != 0;
}

std::string context_error(const redisAsyncContext* c) {
  return c && c->errstr && c->errstr[0] ? std::string(c->errstr) : std::string("closed");
}

void send_script_load(redisAsyncContext* c, redisCallbackFn* fn) {
  const char* argv[] = {"SCRIPT", "LOAD", kScript};
  std::size_t lens[] = {6, 4, sizeof kScript - 1};
  redisAsyncCommandArgv(c, fn, nullptr, 3, argv, lens);
}
}  // namespace

const char* RedisRateLimiter::script() { return kScript; }

RedisRateLimiter::RedisRateLimiter(uv_loop_t* loop, std::string host, int port,
                                   std::uint64_t timeout_ms, Counter& errors)
    : loop_(loop),
      host_(std::move(host)),
      port_(port),
      timeout_ms_(timeout_ms),
      errors_(errors),
      reconnect_timer_(new uv_timer_t),
      wait_timer_(new uv_timer_t) {
  uv_timer_init(loop_, reconnect_timer_);
  reconnect_timer_->data = this;
  uv_timer_init(loop_, wait_timer_);
  wait_timer_->data = this;
  connect();
}

RedisRateLimiter::~RedisRateLimiter() {
  close();
  for (Pending* p : all_) delete p;
}

std::string RedisRateLimiter::name() const {
  return "redis " + host_ + ":" + std::to_string(port_);
}

bool RedisRateLimiter::usable() const {
  if (!ready_ || !ctx_ || going_away(ctx_)) return false;
  return open_until_ms_ == 0 || uv_now(loop_) >= open_until_ms_;
}

void RedisRateLimiter::connect() {
  if (closing_) return;
  redisAsyncContext* c = redisAsyncConnect(host_.c_str(), port_);
  if (!c || c->err) {
    std::string why = c ? context_error(c) : std::string("out of memory");
    if (c) redisAsyncFree(c);
    errors_.add();
    report_down(why);
    schedule_reconnect();
    return;
  }
  ctx_ = c;
  c->data = this;
  redisLibuvAttach(c, loop_);
  redisAsyncSetConnectCallback(c, on_connect);
  redisAsyncSetDisconnectCallback(c, on_disconnect);
  // Queued now, sent once connected: its answer is what makes the connection usable.
  send_script_load(c, script_loaded_cb);
  // hiredis' libuv adapter drops poll errors, so a refused connect is never reported, and a
  // hung Redis's kernel accepts the connection into its backlog while nothing ever answers:
  // the handshake gets a deadline of our own.
  uv_timer_start(reconnect_timer_, on_reconnect_timer, kHandshakeTimeoutMs, 0);
}

void RedisRateLimiter::on_connect(const redisAsyncContext* c, int status) {
  auto* self = static_cast<RedisRateLimiter*>(c->data);
  if (c != self->ctx_) return;
  if (status != REDIS_OK) {
    // hiredis frees the context after this callback (its SCRIPT LOAD comes back empty).
    self->ctx_ = nullptr;
    self->connected_ = self->ready_ = false;
    self->errors_.add();
    self->report_down(context_error(c));
    self->schedule_reconnect();
    return;
  }
  self->connected_ = true;  // not ready until Redis answers the SCRIPT LOAD
}

void RedisRateLimiter::script_loaded_cb(redisAsyncContext* c, void* reply, void*) {
  auto* self = static_cast<RedisRateLimiter*>(c->data);
  if (c == self->ctx_) self->on_script_loaded(reply);
}

void RedisRateLimiter::on_script_loaded(void* r) {
  auto* reply = static_cast<redisReply*>(r);
  if (!reply) return;  // the connection went away: its disconnect is handled elsewhere
  bool loaded = reply->type == REDIS_REPLY_STRING;
  if (loaded) sha_.assign(reply->str, reply->len);
  if (ready_) return;  // a reload after NOSCRIPT
  if (!loaded) {
    errors_.add();
    drop_connection(std::string("SCRIPT LOAD failed: ") +
                    (reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply"));
    return;
  }
  bool first = !ever_ready_;
  ready_ = ever_ready_ = true;
  uv_timer_stop(reconnect_timer_);
  if (first || down_reported_) log_info(name() + " connected");
  down_reported_ = false;
}

void RedisRateLimiter::on_disconnect(const redisAsyncContext* c, int) {
  auto* self = static_cast<RedisRateLimiter*>(c->data);
  if (c != self->ctx_) return;  // dropped by us: handled then
  self->ctx_ = nullptr;         // freed by hiredis
  self->connected_ = self->ready_ = false;
  self->sha_.clear();
  if (self->closing_) return;
  self->errors_.add();
  self->report_down("connection lost: " + context_error(c));
  self->schedule_reconnect();
}

void RedisRateLimiter::on_reconnect_timer(uv_timer_t* t) {
  auto* self = static_cast<RedisRateLimiter*>(t->data);
  if (self->closing_) return;
  if (self->ctx_ && !self->ready_) {  // the connect or its first answer did not come in time
    self->errors_.add();
    self->drop_connection(self->connected_ ? "connected, but no answer within 500ms"
                                           : "no connection within 500ms");
    return;
  }
  if (!self->ctx_) self->connect();
}

void RedisRateLimiter::drop_connection(const std::string& why) {
  redisAsyncContext* c = ctx_;
  ctx_ = nullptr;
  connected_ = ready_ = false;
  sha_.clear();
  // Pending replies come back empty (their waiters hear a failure). Inside a hiredis callback
  // the free is deferred until it returns; a context that is going away is being freed.
  if (c && !going_away(c)) redisAsyncFree(c);
  report_down(why);
  schedule_reconnect();
}

void RedisRateLimiter::schedule_reconnect() {
  if (closing_) return;
  uv_timer_start(reconnect_timer_, on_reconnect_timer, reconnect_delay_ms_, 0);
  reconnect_delay_ms_ = std::min(reconnect_delay_ms_ * 2, kReconnectMaxMs);
}

void RedisRateLimiter::report_down(const std::string& why) {
  if (down_reported_ || closing_) return;
  down_reported_ = true;
  log_warn(name() + (ever_ready_ ? " unreachable: " : " unreachable at start: ") + why +
           "; global rate limits apply on_redis_failure until it answers");
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
  p->timed_out = false;
  free_.push_back(p);
}

RedisRateLimiter::Pending* RedisRateLimiter::decide(std::string_view key, double rate_per_s,
                                                    double burst, RateDecisionWaiter* waiter) {
  if (!usable()) return nullptr;
  Pending* p = new_pending();
  p->owner = this;
  p->waiter = waiter;
  p->key_len = std::min(key.size(), sizeof p->key);
  std::memcpy(p->key, key.data(), p->key_len);
  double interval = 1e6 / rate_per_s;
  std::snprintf(p->interval, sizeof p->interval, "%.3f", interval);
  std::snprintf(p->tolerance, sizeof p->tolerance, "%.3f", interval * burst);
  if (!send(p)) {
    // Refused (the context is going away): no answer will come, and none is given from here.
    free_pending(p);
    errors_.add();
    return nullptr;
  }
  p->deadline_ms = uv_now(loop_) + timeout_ms_;
  bool first = waiting_.empty();
  waiting_.push_back(*p);
  if (first) arm_wait_timer();
  return p;
}

bool RedisRateLimiter::send(Pending* p) {
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
  return redisAsyncCommandArgv(ctx_, reply_cb, p, 6, argv, lens) == REDIS_OK;
}

void RedisRateLimiter::reply_cb(redisAsyncContext*, void* reply, void* privdata) {
  auto* p = static_cast<Pending*>(privdata);
  p->owner->on_reply(p, reply);
}

void RedisRateLimiter::on_reply(Pending* p, void* r) {
  auto* reply = static_cast<redisReply*>(r);
  if (reply && reply->type == REDIS_REPLY_ERROR && !p->retried_with_eval && p->waiter && ctx_ &&
      !going_away(ctx_) && std::strncmp(reply->str, "NOSCRIPT", 8) == 0) {
    // Redis lost the script (restart, SCRIPT FLUSH): send it whole, and load it again.
    p->retried_with_eval = true;
    sha_.clear();
    if (send(p)) {
      send_script_load(ctx_, script_loaded_cb);
      return;  // same deadline
    }
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
  }
  waiting_.remove(*p);
  RateDecisionWaiter* waiter = p->waiter;
  bool late = p->timed_out;
  free_pending(p);
  if (ok && !late)
    success();  // a late answer is no success: a Redis slower than the timeout must trip
  else if (!ok && waiter)
    failure();  // a timed-out or cancelled decision was counted then, or is nobody's
  if (waiter) waiter->on_rate_decision(ok, d);
}

void RedisRateLimiter::cancel(Pending* p) {
  waiting_.remove(*p);
  p->waiter = nullptr;  // back to the free list when its reply (or the disconnect) arrives
}

void RedisRateLimiter::arm_wait_timer() {
  if (closing_) return;
  if (waiting_.empty()) {
    uv_timer_stop(wait_timer_);
    return;
  }
  std::uint64_t now = uv_now(loop_);
  std::uint64_t due = waiting_.front()->deadline_ms;
  uv_timer_start(wait_timer_, on_wait_timer, due > now ? due - now : 0, 0);
}

void RedisRateLimiter::on_wait_timer(uv_timer_t* t) {
  auto* self = static_cast<RedisRateLimiter*>(t->data);
  std::uint64_t now = uv_now(self->loop_);
  // Waiters called here may ask again (appended, later deadlines) or cancel others: the
  // front is read afresh each time.
  while (!self->closing_ && !self->waiting_.empty() && self->waiting_.front()->deadline_ms <= now) {
    Pending* p = self->waiting_.front();
    self->waiting_.remove(*p);
    RateDecisionWaiter* waiter = p->waiter;
    p->waiter = nullptr;  // its reply, if it still comes, is dropped
    p->timed_out = true;
    self->failure();      // may drop the connection: p must not be touched after this
    if (waiter) waiter->on_rate_decision(false, RateDecision{});
  }
  self->arm_wait_timer();
}

void RedisRateLimiter::failure() {
  errors_.add();
  if (++consecutive_failures_ < kBreakerFailures) return;
  std::uint64_t now = uv_now(loop_);
  if (open_until_ms_ > now) return;  // not asking already
  // The count is not reset: after the pause, the first failure stops asking again.
  open_until_ms_ = now + kBreakerOpenMs;
  // The connection may be dead without hiredis knowing (its libuv adapter ignores poll errors
  // such as a reset): start over; the new one is used once Redis answers on it.
  drop_connection(std::to_string(consecutive_failures_) +
                  " failures in a row (errors or timeouts); not asking for " +
                  std::to_string(kBreakerOpenMs) + "ms");
}

void RedisRateLimiter::success() {
  consecutive_failures_ = 0;
  reconnect_delay_ms_ = kReconnectMinMs;
}

void RedisRateLimiter::close() {
  if (closing_) return;
  closing_ = true;
  // Whoever still waits is going away too: no answers from here on.
  while (!waiting_.empty()) {
    Pending* p = waiting_.front();
    waiting_.remove(*p);
    p->waiter = nullptr;
  }
  if (ctx_) {
    redisAsyncContext* c = ctx_;
    ctx_ = nullptr;
    connected_ = ready_ = false;
    if (!going_away(c)) redisAsyncFree(c);  // calls every pending callback with a null reply
  }
  uv_close(reinterpret_cast<uv_handle_t*>(reconnect_timer_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  uv_close(reinterpret_cast<uv_handle_t*>(wait_timer_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

}  // namespace bulwark
