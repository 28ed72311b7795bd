#include "resilience/redis_node.h"

#include <arpa/inet.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "core/log.h"
#include "resilience/redis_slots.h"

namespace bulwark {

namespace {
constexpr int kBreakerFailures = 3;
constexpr std::uint64_t kBreakerOpenMs = 1000;
// A new connection must be made and answer its handshake within this.
constexpr std::uint64_t kHandshakeTimeoutMs = 500;
constexpr std::uint64_t kReconnectMinMs = 100;
constexpr std::uint64_t kReconnectMaxMs = 2000;

// hiredis refuses commands on a context that is disconnecting or being freed; its pending
// callbacks are then being called with null replies.
bool going_away(const redisAsyncContext* c) {
  return (c->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)) != 0;
}

std::string context_error(const redisAsyncContext* c) {
  return c && c->errstr && c->errstr[0] ? std::string(c->errstr) : std::string("closed");
}

void send_script_load(redisAsyncContext* c, redisCallbackFn* fn) {
  const char* script = RedisRateLimiter::script();
  const char* argv[] = {"SCRIPT", "LOAD", script};
  std::size_t lens[] = {6, 4, std::strlen(script)};
  redisAsyncCommandArgv(c, fn, nullptr, 3, argv, lens);
}

bool is_ip_literal(const std::string& host) {
  in6_addr buf{};
  return inet_pton(AF_INET, host.c_str(), &buf) == 1 || inet_pton(AF_INET6, host.c_str(), &buf) == 1;
}

struct CommandCall {
  std::function<void(redisReply*)> done;
};
}  // namespace

RedisNode::RedisNode(RedisRateLimiter& owner, uv_loop_t* loop, std::string host, int port, Kind kind,
                     Auth auth, std::uint64_t timeout_ms, Counter& errors, RedisNodeStats* stats)
    : owner_(owner),
      loop_(loop),
      host_(std::move(host)),
      port_(port),
      kind_(kind),
      auth_(std::move(auth)),
      timeout_ms_(timeout_ms),
      errors_(errors),
      stats_(stats),
      reconnect_timer_(new uv_timer_t),
      wait_timer_(new uv_timer_t) {
  uv_timer_init(loop_, reconnect_timer_);
  reconnect_timer_->data = this;
  uv_timer_init(loop_, wait_timer_);
  wait_timer_->data = this;
  connect();
}

RedisNode::~RedisNode() { close(false); }

void RedisNode::count_error() {
  errors_.add();
  if (stats_) stats_->errors.add();
}

void RedisNode::set_up(bool up) {
  if (up == up_) return;
  up_ = up;
  if (stats_) stats_->usable.add(up ? 1 : -1);
}

std::string RedisNode::address() const {
  return host_.find(':') != std::string::npos ? "[" + host_ + "]:" + std::to_string(port_)
                                              : host_ + ":" + std::to_string(port_);
}

std::string RedisNode::name() const {
  return std::string(kind_ == Kind::sentinel ? "redis sentinel " : "redis ") + address();
}

bool RedisNode::usable() const {
  if (!ready_ || !ctx_ || going_away(ctx_)) return false;
  return open_until_ms_ == 0 || uv_now(loop_) >= open_until_ms_;
}

void RedisNode::connect() {
  if (closing_ || resolving_) return;
  // The whole handshake (resolving included) gets a deadline of our own: hiredis' libuv adapter
  // drops poll errors, so a refused connect is never reported, and a hung Redis's kernel
  // accepts the connection into its backlog while nothing ever answers.
  uv_timer_start(reconnect_timer_, on_reconnect_timer, kHandshakeTimeoutMs, 0);
  if (is_ip_literal(host_)) return connect_to(host_);
  auto* req = new uv_getaddrinfo_t;
  req->data = this;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  resolving_ = req;
  int rc = uv_getaddrinfo(loop_, req, [](uv_getaddrinfo_t* r, int status, addrinfo* res) {
    auto* self = static_cast<RedisNode*>(r->data);
    std::string ip, why;
    if (status == 0 && res) {
      char buf[INET6_ADDRSTRLEN] = {};
      if (res->ai_family == AF_INET)
        uv_ip4_name(reinterpret_cast<const sockaddr_in*>(res->ai_addr), buf, sizeof buf);
      else
        uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(res->ai_addr), buf, sizeof buf);
      ip = buf;
    } else {
      why = status == UV_ECANCELED ? "" : std::string("cannot resolve: ") + uv_strerror(status);
    }
    uv_freeaddrinfo(res);
    delete r;
    if (!self) return;  // the node went away while resolving
    self->resolving_ = nullptr;
    if (self->closing_) return;
    if (ip.empty()) {
      self->count_error();
      self->report_down(why);
      self->schedule_reconnect();
      return;
    }
    self->connect_to(ip);
  }, host_.c_str(), std::to_string(port_).c_str(), &hints);
  if (rc != 0) {
    delete req;
    resolving_ = nullptr;
    count_error();
    report_down(std::string("cannot resolve: ") + uv_strerror(rc));
    schedule_reconnect();
  }
}

void RedisNode::connect_to(const std::string& ip) {
  redisAsyncContext* c = redisAsyncConnect(ip.c_str(), port_);
  if (!c || c->err) {
    std::string why = c ? context_error(c) : std::string("out of memory");
    if (c) redisAsyncFree(c);
    count_error();
    report_down(why);
    schedule_reconnect();
    return;
  }
  ctx_ = c;
  c->data = this;
  redisLibuvAttach(c, loop_);
  redisAsyncSetConnectCallback(c, on_connect);
  redisAsyncSetDisconnectCallback(c, on_disconnect);
  // Queued now, sent once connected: their answers are what make the connection usable.
  if (!auth_.password.empty()) {
    std::vector<const char*> argv{"AUTH"};
    std::vector<std::size_t> lens{4};
    if (!auth_.username.empty()) {
      argv.push_back(auth_.username.c_str());
      lens.push_back(auth_.username.size());
    }
    argv.push_back(auth_.password.c_str());
    lens.push_back(auth_.password.size());
    redisAsyncCommandArgv(c, auth_cb, nullptr, static_cast<int>(argv.size()), argv.data(), lens.data());
  }
  if (kind_ == Kind::data) {
    send_script_load(c, script_loaded_cb);
  } else {
    const char* argv[] = {"PING"};
    std::size_t lens[] = {4};
    redisAsyncCommandArgv(c, script_loaded_cb, nullptr, 1, argv, lens);
  }
}

void RedisNode::on_connect(const redisAsyncContext* c, int status) {
  auto* self = static_cast<RedisNode*>(c->data);
  if (c != self->ctx_) return;
  if (status != REDIS_OK) {
    // hiredis frees the context after this callback (its queued commands come back empty).
    self->ctx_ = nullptr;
    self->connected_ = self->ready_ = false;
    self->count_error();
    self->report_down(context_error(c));
    self->schedule_reconnect();
    return;
  }
  self->connected_ = true;  // not ready until Redis answers the handshake
}

void RedisNode::auth_cb(redisAsyncContext* c, void* reply, void*) {
  auto* self = static_cast<RedisNode*>(c->data);
  if (c == self->ctx_) self->on_handshake(static_cast<redisReply*>(reply), true);
}

void RedisNode::script_loaded_cb(redisAsyncContext* c, void* reply, void*) {
  auto* self = static_cast<RedisNode*>(c->data);
  if (c == self->ctx_) self->on_handshake(static_cast<redisReply*>(reply), false);
}

void RedisNode::on_handshake(redisReply* reply, bool auth) {
  if (!reply) return;  // the connection went away: its disconnect is handled elsewhere
  if (auth) {
    if (reply->type == REDIS_REPLY_ERROR) {
      count_error();
      owner_.auth_failed();
      // Logged every time (not once per outage): a wrong password is a configuration error.
      down_reported_ = false;
      drop_connection(std::string("AUTH refused: ") + reply->str);
    }
    return;
  }
  bool loaded = kind_ == Kind::data ? reply->type == REDIS_REPLY_STRING
                                    : reply->type == REDIS_REPLY_STATUS;
  if (loaded && kind_ == Kind::data) sha_.assign(reply->str, reply->len);
  if (ready_) return;  // a reload after NOSCRIPT
  if (!loaded) {
    if (!ctx_) return;  // dropped by a refused AUTH already
    count_error();
    drop_connection(std::string(kind_ == Kind::data ? "SCRIPT LOAD" : "PING") + " failed: " +
                    (reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply"));
    return;
  }
  bool first = !ever_ready_;
  ready_ = ever_ready_ = true;
  set_up(true);
  uv_timer_stop(reconnect_timer_);
  if (first || down_reported_) log_info(name() + " connected");
  down_reported_ = false;
  owner_.node_ready(*this);
}

void RedisNode::on_disconnect(const redisAsyncContext* c, int) {
  auto* self = static_cast<RedisNode*>(c->data);
  if (c != self->ctx_) return;  // dropped by us: handled then
  self->ctx_ = nullptr;         // freed by hiredis
  self->connected_ = self->ready_ = false;
  self->set_up(false);
  self->sha_.clear();
  if (self->closing_) return;
  self->count_error();
  self->report_down("connection lost: " + context_error(c));
  self->schedule_reconnect();
  self->owner_.node_down(*self);
}

void RedisNode::on_reconnect_timer(uv_timer_t* t) {
  auto* self = static_cast<RedisNode*>(t->data);
  if (self->closing_) return;
  if ((self->ctx_ || self->resolving_) && !self->ready_) {  // not done in time
    self->count_error();
    if (self->resolving_) {
      self->resolving_->data = nullptr;  // its callback only frees it
      uv_cancel(reinterpret_cast<uv_req_t*>(self->resolving_));
      self->resolving_ = nullptr;
    }
    self->drop_connection(self->connected_ ? "connected, but no answer within 500ms"
                                           : "no connection within 500ms");
    return;
  }
  if (!self->ctx_) self->connect();
}

void RedisNode::drop_connection(const std::string& why) {
  set_up(false);
  redisAsyncContext* c = ctx_;
  ctx_ = nullptr;
  connected_ = ready_ = false;
  sha_.clear();
  // Pending replies come back empty (their waiters hear a failure). Inside a hiredis callback
  // the free is deferred until it returns; a context that is going away is being freed.
  if (c && !going_away(c)) redisAsyncFree(c);
  report_down(why);
  schedule_reconnect();
  owner_.node_down(*this);
}

void RedisNode::schedule_reconnect() {
  if (closing_) return;
  uv_timer_start(reconnect_timer_, on_reconnect_timer, reconnect_delay_ms_, 0);
  reconnect_delay_ms_ = std::min(reconnect_delay_ms_ * 2, kReconnectMaxMs);
}

void RedisNode::report_down(const std::string& why) {
  if (down_reported_ || closing_) return;
  down_reported_ = true;
  log_warn(name() + (ever_ready_ ? " unreachable: " : " unreachable at start: ") + why +
           (kind_ == Kind::data ? "; global rate limits apply on_redis_failure until it answers" : ""));
}

bool RedisNode::send_decision(RedisRateLimiter::Pending* p, bool asking) {
  if (!usable()) return false;
  p->node = this;
  p->sent_ns = uv_hrtime();
  if (!send(p, asking)) {
    count_error();
    return false;
  }
  if (p->deadline_ms == 0) p->deadline_ms = uv_now(loop_) + timeout_ms_;
  insert_waiting(p);
  return true;
}

void RedisNode::insert_waiting(RedisRateLimiter::Pending* p) {
  // Deadlines come in order, except for a decision redirected here with its own: such a one
  // is rare, and the list is short; it goes where its deadline puts it.
  if (!waiting_.empty() && waiting_.back()->deadline_ms > p->deadline_ms) {
    std::vector<RedisRateLimiter::Pending*> later;
    while (!waiting_.empty() && waiting_.back()->deadline_ms > p->deadline_ms) {
      later.push_back(waiting_.back());
      waiting_.remove(*later.back());
    }
    waiting_.push_back(*p);
    for (auto it = later.rbegin(); it != later.rend(); ++it) waiting_.push_back(**it);
  } else {
    waiting_.push_back(*p);
  }
  if (waiting_.front() == p) arm_wait_timer();
}

bool RedisNode::send(RedisRateLimiter::Pending* p, bool asking) {
  if (asking) {
    const char* argv[] = {"ASKING"};
    std::size_t lens[] = {6};
    if (redisAsyncCommandArgv(ctx_, nullptr, nullptr, 1, argv, lens) != REDIS_OK) return false;
  }
  const char* script = RedisRateLimiter::script();
  bool sha = !sha_.empty() && !p->retried_with_eval;
  const char* argv[] = {sha ? "EVALSHA" : "EVAL", sha ? sha_.c_str() : script, "1",
                        p->key,                   p->interval,                  p->tolerance};
  std::size_t lens[] = {sha ? 7u : 4u, sha ? sha_.size() : std::strlen(script), 1,
                        p->key_len,    std::strlen(p->interval),              std::strlen(p->tolerance)};
  return redisAsyncCommandArgv(ctx_, reply_cb, p, 6, argv, lens) == REDIS_OK;
}

bool RedisNode::command(const std::vector<std::string>& argv, std::function<void(redisReply*)> done) {
  if (!usable()) return false;
  std::vector<const char*> args;
  std::vector<std::size_t> lens;
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* call = new CommandCall{std::move(done)};
  if (redisAsyncCommandArgv(ctx_, command_cb, call, static_cast<int>(args.size()), args.data(),
                            lens.data()) != REDIS_OK) {
    delete call;
    return false;
  }
  return true;
}

void RedisNode::command_cb(redisAsyncContext*, void* reply, void* privdata) {
  auto* call = static_cast<CommandCall*>(privdata);
  auto done = std::move(call->done);
  delete call;
  done(static_cast<redisReply*>(reply));
}

void RedisNode::reply_cb(redisAsyncContext*, void* reply, void* privdata) {
  auto* p = static_cast<RedisRateLimiter::Pending*>(privdata);
  p->node->on_reply(p, static_cast<redisReply*>(reply));
}

void RedisNode::on_reply(RedisRateLimiter::Pending* p, redisReply* reply) {
  if (reply && reply->type == REDIS_REPLY_ERROR && p->waiter && !p->timed_out) {
    if (!p->retried_with_eval && ctx_ && !going_away(ctx_) &&
        std::strncmp(reply->str, "NOSCRIPT", 8) == 0) {
      // Redis lost the script (restart, SCRIPT FLUSH): send it whole, and load it again.
      p->retried_with_eval = true;
      sha_.clear();
      if (send(p, false)) {
        send_script_load(ctx_, script_loaded_cb);
        return;  // same deadline
      }
    }
    if (auto redirect = parse_redis_redirect(std::string_view(reply->str, reply->len))) {
      // The key's slot is served elsewhere (cluster): the limiter sends it on, same deadline.
      waiting_.remove(*p);
      arm_wait_timer();
      owner_.redirect(*this, p, *redirect);
      return;
    }
    if (std::strncmp(reply->str, "READONLY", 8) == 0) owner_.node_down(*this);  // a demoted master
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
  std::uint64_t p_sent = p->sent_ns;
  owner_.free_pending(p);
  if (ok && !late && stats_) stats_->latency.observe_ns(uv_hrtime() - p_sent);
  if (ok && !late)
    success();  // a late answer is no success: a Redis slower than the timeout must trip
  else if (!ok && waiter)
    failure();  // a timed-out or cancelled decision was counted then, or is nobody's
  if (waiter) waiter->on_rate_decision(ok, d);
}

void RedisNode::cancel(RedisRateLimiter::Pending* p) {
  waiting_.remove(*p);
  p->waiter = nullptr;  // back to the free list when its reply (or the disconnect) arrives
}

void RedisNode::arm_wait_timer() {
  if (closing_) return;
  if (waiting_.empty()) {
    uv_timer_stop(wait_timer_);
    return;
  }
  std::uint64_t now = uv_now(loop_);
  std::uint64_t due = waiting_.front()->deadline_ms;
  uv_timer_start(wait_timer_, on_wait_timer, due > now ? due - now : 0, 0);
}

void RedisNode::on_wait_timer(uv_timer_t* t) {
  auto* self = static_cast<RedisNode*>(t->data);
  std::uint64_t now = uv_now(self->loop_);
  // Waiters called here may ask again (appended, later deadlines) or cancel others: the
  // front is read afresh each time.
  while (!self->closing_ && !self->waiting_.empty() && self->waiting_.front()->deadline_ms <= now) {
    RedisRateLimiter::Pending* p = self->waiting_.front();
    self->waiting_.remove(*p);
    RateDecisionWaiter* waiter = p->waiter;
    p->waiter = nullptr;  // its reply, if it still comes, is dropped
    p->timed_out = true;
    self->failure();      // may drop the connection: p must not be touched after this
    if (waiter) waiter->on_rate_decision(false, RateDecision{});
  }
  self->arm_wait_timer();
}

void RedisNode::failure() {
  count_error();
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

void RedisNode::success() {
  consecutive_failures_ = 0;
  reconnect_delay_ms_ = kReconnectMinMs;
}

void RedisNode::close(bool notify) {
  if (closing_) return;
  closing_ = true;
  set_up(false);
  // Whoever still waits hears a failure now, or nothing when everything is going away.
  while (!waiting_.empty()) {
    RedisRateLimiter::Pending* p = waiting_.front();
    waiting_.remove(*p);
    RateDecisionWaiter* waiter = p->waiter;
    p->waiter = nullptr;
    if (notify && waiter) waiter->on_rate_decision(false, RateDecision{});
  }
  if (resolving_) {
    resolving_->data = nullptr;
    uv_cancel(reinterpret_cast<uv_req_t*>(resolving_));
    resolving_ = nullptr;
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
