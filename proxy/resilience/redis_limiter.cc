#include "resilience/redis_limiter.h"

#include <hiredis/hiredis.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "core/log.h"
#include "net/address.h"
#include "resilience/redis_node.h"
#include "resilience/redis_slots.h"

namespace bulwark {

namespace {
constexpr std::uint64_t kClusterRefreshMs = 10000;
constexpr std::uint64_t kSentinelAskMs = 1000;
constexpr std::uint64_t kMinRefreshGapMs = 100;  // MOVED storms ask for one map, not hundreds
constexpr int kMaxRedirects = 2;
constexpr std::uint64_t kRegisterEveryMs = 2000;
constexpr std::uint64_t kMemberTtlMs = 10000;
const char kMembersKey[] = "bulwark:replicas";

// KEYS[1]: the set of live replicas (member -> last seen, Redis's clock); ARGV[1]: this
// process; ARGV[2]: how long a member counts without refreshing (ms). Returns the count.
const char kRegisterScript[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
)lua";

// This process in the set of replicas: every worker registers the same member.
const std::string& process_member() {
  static const std::string member = [] {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    char buf[64];
    std::snprintf(buf, sizeof buf, ":%d:%016llx", static_cast<int>(getpid()),
                  static_cast<unsigned long long>(uv_hrtime() ^ (static_cast<std::uint64_t>(getpid()) << 40)));
    return std::string(host) + buf;
  }();
  return member;
}

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

RedisConfig standalone(std::string host, int port, std::uint64_t timeout_ms) {
  RedisConfig c;
  c.addresses.push_back(host.find(':') != std::string::npos ? "[" + host + "]:" + std::to_string(port)
                                                            : host + ":" + std::to_string(port));
  c.timeout_ms = timeout_ms;
  c.replicas = 1;  // no registration: the tests' fake Redis sees only the limiter's decisions
  return c;
}

std::string reply_string(const redisReply* r) {
  return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) ? std::string(r->str, r->len)
                                                                              : std::string();
}
}  // namespace

const char* RedisRateLimiter::script() { return kScript; }

RedisRateLimiter::RedisRateLimiter(uv_loop_t* loop, std::string host, int port,
                                   std::uint64_t timeout_ms, Counter& errors)
    : RedisRateLimiter(loop, standalone(std::move(host), port, timeout_ms), errors) {}

RedisRateLimiter::RedisRateLimiter(uv_loop_t* loop, const RedisConfig& config, Counter& errors,
                                   WorkerStats* stats)
    : loop_(loop), config_(config), errors_(errors), stats_(stats) {
  slots_.fill(-1);
  if (stats_) stats_->redis_replicas.add(replicas() - stats_->redis_replicas.get());
  for (const std::string& address : config_.addresses) {
    std::string host, error;
    int port = 0;
    if (!split_host_port(address, host, port, error)) continue;  // the loader checked them
    if (config_.mode == "sentinel") {
      sentinels_.push_back(std::make_unique<RedisNode>(
          *this, loop_, host, port, RedisNode::Kind::sentinel, RedisNode::Auth{}, config_.timeout_ms,
          errors_, stats_ ? &stats_->redis_node("sentinel " + address) : nullptr));
    } else {
      data_node(host, port);
      if (config_.mode != "cluster") break;
    }
  }
  if (config_.replicas == 0) {
    members_ = new uv_timer_t;
    uv_timer_init(loop_, members_);
    members_->data = this;
    uv_timer_start(members_, [](uv_timer_t* t) { static_cast<RedisRateLimiter*>(t->data)->register_replica(); },
                   kRegisterEveryMs, kRegisterEveryMs);
  }
  if (config_.mode != "standalone") {
    tick_ = new uv_timer_t;
    uv_timer_init(loop_, tick_);
    tick_->data = this;
    std::uint64_t every = config_.mode == "cluster" ? kClusterRefreshMs : kSentinelAskMs;
    uv_timer_start(tick_, on_tick, every, every);
  }
}

RedisRateLimiter::~RedisRateLimiter() {
  close();
  retired_.clear();
  sentinels_.clear();
  nodes_.clear();
  for (Pending* p : all_) delete p;
}

RedisNode* RedisRateLimiter::data_node(const std::string& host, int port) {
  for (auto& n : nodes_)
    if (n->port() == port && n->host() == host) return n.get();
  std::string address = host.find(':') != std::string::npos ? "[" + host + "]:" + std::to_string(port)
                                                            : host + ":" + std::to_string(port);
  nodes_.push_back(std::make_unique<RedisNode>(*this, loop_, host, port, RedisNode::Kind::data,
                                               RedisNode::Auth{config_.username, config_.password},
                                               config_.timeout_ms, errors_,
                                               stats_ ? &stats_->redis_node(address) : nullptr));
  return nodes_.back().get();
}

RedisNode* RedisRateLimiter::node_for(std::string_view key) {
  if (config_.mode == "sentinel") return master_;
  if (config_.mode != "cluster") return nodes_.empty() ? nullptr : nodes_.front().get();
  if (slots_known_) {
    std::int16_t i = slots_[redis_key_slot(key)];
    if (i >= 0 && static_cast<std::size_t>(i) < nodes_.size() && nodes_[i]->usable()) return nodes_[i].get();
  }
  // No map yet, or its node is not answering: any node that answers redirects the decision.
  for (auto& n : nodes_)
    if (n->usable()) return n.get();
  return nullptr;
}

bool RedisRateLimiter::usable() const {
  if (closing_) return false;
  if (config_.mode == "sentinel") return master_ && master_->usable();
  for (const auto& n : nodes_)
    if (n->usable()) return true;
  return false;
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
  p->node = nullptr;
  p->deadline_ms = 0;
  p->redirects = 0;
  p->retried_with_eval = false;
  p->timed_out = false;
  free_.push_back(p);
}

RedisRateLimiter::Pending* RedisRateLimiter::decide(std::string_view key, double rate_per_s,
                                                    double burst, RateDecisionWaiter* waiter) {
  if (closing_) return nullptr;
  RedisNode* node = node_for(key);
  if (!node || !node->usable()) return nullptr;
  Pending* p = new_pending();
  p->waiter = waiter;
  p->key_len = std::min(key.size(), sizeof p->key);
  std::memcpy(p->key, key.data(), p->key_len);
  double interval = 1e6 / rate_per_s;
  std::snprintf(p->interval, sizeof p->interval, "%.3f", interval);
  std::snprintf(p->tolerance, sizeof p->tolerance, "%.3f", interval * burst);
  if (!node->send_decision(p, false)) {
    // Refused (the context is going away): no answer will come, and none is given from here.
    free_pending(p);
    return nullptr;
  }
  return p;
}

void RedisRateLimiter::cancel(Pending* p) {
  if (p->node) p->node->cancel(p);
  else p->waiter = nullptr;
}

void RedisRateLimiter::redirect(RedisNode&, Pending* p, const RedisRedirect& to) {
  RedisNode* target = data_node(to.host, to.port);
  if (!to.ask) {
    // MOVED: the slot has a new owner for good; the rest of the map may have changed too.
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].get() == target) slots_[to.slot] = static_cast<std::int16_t>(i);
    if (uv_now(loop_) >= last_refresh_ms_ + kMinRefreshGapMs) refresh_slots();
  }
  if (++p->redirects <= kMaxRedirects && target->send_decision(p, to.ask)) return;
  // The node named does not answer yet (just met, or down): this decision fails.
  errors_.add();
  RateDecisionWaiter* waiter = p->waiter;
  free_pending(p);
  if (waiter) waiter->on_rate_decision(false, RateDecision{});
}

void RedisRateLimiter::node_ready(RedisNode& node) {
  if (closing_) return;
  if (config_.mode == "cluster" && !slots_known_) refresh_slots();
  if (config_.mode == "sentinel" && !master_) ask_sentinels();
  // Register at once (not only every 2 s): replicas count each other from the start.
  if (config_.replicas == 0 && node.ever_ready()) register_replica();
}

void RedisRateLimiter::node_down(RedisNode& node) {
  if (closing_) return;
  if (config_.mode == "cluster" && uv_now(loop_) >= last_refresh_ms_ + kMinRefreshGapMs) refresh_slots();
  if (config_.mode == "sentinel" && &node == master_) ask_sentinels();
}

void RedisRateLimiter::refresh_slots() {
  if (refreshing_ || closing_) return;
  RedisNode* asked = nullptr;
  for (auto& n : nodes_)
    if (n->usable()) {
      asked = n.get();
      break;
    }
  if (!asked) return;  // the next node to answer asks (node_ready), or the tick
  refreshing_ = true;
  last_refresh_ms_ = uv_now(loop_);
  std::string fallback_host = asked->host();
  asked->command({"CLUSTER", "SLOTS"}, [this, fallback_host](redisReply* r) {
    refreshing_ = false;
    if (closing_ || !r) return;
    if (r->type != REDIS_REPLY_ARRAY) {
      log_warn("redis cluster: CLUSTER SLOTS failed: " +
               (r->type == REDIS_REPLY_ERROR ? std::string(r->str) : std::string("unexpected reply")));
      return;
    }
    std::array<std::int16_t, 16384> map;
    map.fill(-1);
    std::size_t covered = 0;
    for (std::size_t i = 0; i < r->elements; ++i) {
      const redisReply* range = r->element[i];
      if (range->type != REDIS_REPLY_ARRAY || range->elements < 3) continue;
      const redisReply* master = range->element[2];
      if (range->element[0]->type != REDIS_REPLY_INTEGER || range->element[1]->type != REDIS_REPLY_INTEGER ||
          master->type != REDIS_REPLY_ARRAY || master->elements < 2 ||
          master->element[1]->type != REDIS_REPLY_INTEGER)
        continue;
      long long first = range->element[0]->integer, last = range->element[1]->integer;
      if (first < 0 || last >= kRedisSlots || first > last) continue;
      std::string host = reply_string(master->element[0]);
      if (host.empty() || host == "?") host = fallback_host;  // "" = the node that answered
      RedisNode* n = data_node(host, static_cast<int>(master->element[1]->integer));
      std::int16_t index = -1;
      for (std::size_t k = 0; k < nodes_.size(); ++k)
        if (nodes_[k].get() == n) index = static_cast<std::int16_t>(k);
      for (long long s = first; s <= last; ++s) map[static_cast<std::size_t>(s)] = index;
      covered += static_cast<std::size_t>(last - first + 1);
    }
    if (covered == 0) return;
    bool first_map = !slots_known_;
    slots_ = map;
    slots_known_ = true;
    if (first_map)
      log_info("redis cluster: slot map read, " + std::to_string(covered) + " of 16384 slots on " +
               std::to_string(nodes_.size()) + " node(s)");
  });
}

void RedisRateLimiter::ask_sentinels() {
  if (asking_sentinels_ || closing_) return;
  for (auto& s : sentinels_) {
    if (!s->usable()) continue;
    asking_sentinels_ = true;
    std::string from = s->address();
    bool sent = s->command({"SENTINEL", "get-master-addr-by-name", config_.master_name},
                           [this, from](redisReply* r) {
      asking_sentinels_ = false;
      if (closing_ || !r) return;
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        log_warn("redis sentinel " + from + " does not know master '" + config_.master_name + "'");
        return;
      }
      std::string host = reply_string(r->element[0]);
      int port = std::atoi(reply_string(r->element[1]).c_str());
      if (!host.empty() && port > 0 && port <= 65535) set_master(host, port);
    });
    if (sent) return;
    asking_sentinels_ = false;
  }
}

void RedisRateLimiter::set_master(const std::string& host, int port) {
  if (master_ && master_->host() == host && master_->port() == port) return;
  std::string was = master_ ? master_->address() : "";
  if (master_) {
    // Decisions waiting on the old master fail now (their callers decide without Redis); the
    // node itself is freed on the next tick, outside any of its callbacks.
    master_->close(true);
    for (auto it = nodes_.begin(); it != nodes_.end(); ++it)
      if (it->get() == master_) {
        retired_.push_back(std::move(*it));
        nodes_.erase(it);
        break;
      }
  }
  master_ = data_node(host, port);
  log_info("redis sentinel: master '" + config_.master_name + "' is " + master_->address() +
           (was.empty() ? "" : " (was " + was + ")"));
}

void RedisRateLimiter::register_replica() {
  if (closing_ || registering_) return;
  RedisNode* node = node_for(kMembersKey);
  if (!node) return;
  registering_ = true;
  bool sent = node->command({"EVAL", kRegisterScript, "1", kMembersKey, process_member(),
                             std::to_string(kMemberTtlMs)},
                            [this](redisReply* r) {
                              registering_ = false;
                              if (closing_ || !r || r->type != REDIS_REPLY_INTEGER) return;
                              int n = static_cast<int>(std::max<long long>(1, r->integer));
                              if (n != learned_replicas_)
                                log_info("redis: " + std::to_string(n) + " Bulwark replica(s) share the "
                                         "global rate limits (each takes 1/" + std::to_string(n) +
                                         " of a quota while Redis is out)");
                              learned_replicas_ = n;
                              if (stats_) stats_->redis_replicas.add(n - stats_->redis_replicas.get());
                            });
  if (!sent) registering_ = false;
}

void RedisRateLimiter::on_tick(uv_timer_t* t) {
  auto* self = static_cast<RedisRateLimiter*>(t->data);
  self->retired_.clear();
  if (self->config_.mode == "cluster") self->refresh_slots();
  else if (self->config_.mode == "sentinel") self->ask_sentinels();
}

void RedisRateLimiter::close() {
  if (closing_) return;
  closing_ = true;
  for (uv_timer_t** timer : {&tick_, &members_}) {
    if (!*timer) continue;
    uv_close(reinterpret_cast<uv_handle_t*>(*timer), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    *timer = nullptr;
  }
  for (auto& n : nodes_) n->close(false);
  for (auto& n : sentinels_) n->close(false);
  for (auto& n : retired_) n->close(false);
}

}  // namespace bulwark
