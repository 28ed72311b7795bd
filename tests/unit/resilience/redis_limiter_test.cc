// RedisRateLimiter (resilience/redis_limiter.h) against a fake Redis: a RESP server on
// 127.0.0.1:<ephemeral> on the limiter's own loop, scripted by each test (answer, hold, fail,
// hang up). No redis-server is needed, and the limiter runs unchanged: the real hiredis
// context, its libuv adapter and the limiter's timers. The loop is turned with UV_RUN_ONCE
// until what a test waits for has happened; the timeouts used are a few milliseconds.
#include "resilience/redis_limiter.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <csignal>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/log.h"
#include "test_helpers.h"

using namespace bulwark;

namespace {

using Command = std::vector<std::string>;

const char kSha[] = "0123456789abcdef0123456789abcdef01234567";

std::string bulk(const std::string& s) {
  return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n";
}
std::string decision(int allowed, int remaining, int reset_us, int retry_after_us) {
  return "*4\r\n:" + std::to_string(allowed) + "\r\n:" + std::to_string(remaining) + "\r\n:" +
         std::to_string(reset_us) + "\r\n:" + std::to_string(retry_after_us) + "\r\n";
}

// A Redis that speaks just enough RESP: it parses the commands hiredis sends and answers them
// through `handler` (nullopt: no answer now; the test may answer later with send()).
class FakeRedis {
 public:
  struct Conn {
    FakeRedis* owner = nullptr;
    uv_tcp_t tcp{};
    std::string buffer;
    std::vector<Command> commands;
    bool closed = false;
    bool eof = false;  // the limiter hung up
    void send(const std::string& raw) { test::write_copy(tcp, raw); }
    void close() { test::close_once(tcp, closed); }
  };

  explicit FakeRedis(uv_loop_t* loop) : loop_(loop) {
    uv_tcp_init(loop_, &server_);
    server_.data = this;
    sockaddr_in sa{};
    uv_ip4_addr("127.0.0.1", 0, &sa);
    REQUIRE(uv_tcp_bind(&server_, reinterpret_cast<const sockaddr*>(&sa), 0) == 0);
    REQUIRE(uv_listen(reinterpret_cast<uv_stream_t*>(&server_), 16, on_connection) == 0);
    sockaddr_storage bound{};
    int len = sizeof bound;
    uv_tcp_getsockname(&server_, reinterpret_cast<sockaddr*>(&bound), &len);
    port_ = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    // By default: SCRIPT LOAD answers with a sha, decisions are held.
    handler = [](Conn&, const Command& c) -> std::optional<std::string> {
      if (c.size() >= 2 && c[0] == "SCRIPT" && c[1] == "LOAD") return bulk(kSha);
      return std::nullopt;
    };
  }
  ~FakeRedis() { close(); }
  void close() {
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&server_)))
      uv_close(reinterpret_cast<uv_handle_t*>(&server_), nullptr);
    for (auto& c : conns_) c->close();
  }

  int port() const { return port_; }
  std::size_t accepted() const { return conns_.size(); }
  Conn& conn(std::size_t i) { return *conns_.at(i); }
  Conn& last() { return *conns_.back(); }
  // Every command on every connection, in arrival order.
  std::vector<Command> log;
  std::function<std::optional<std::string>(Conn&, const Command&)> handler;

 private:
  static void on_connection(uv_stream_t* server, int status) {
    auto* self = static_cast<FakeRedis*>(server->data);
    if (status < 0) return;
    auto c = std::make_unique<Conn>();
    c->owner = self;
    uv_tcp_init(self->loop_, &c->tcp);
    c->tcp.data = c.get();
    REQUIRE(uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) == 0);
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->tcp),
        [](uv_handle_t*, std::size_t, uv_buf_t* buf) {
          static char scratch[64 * 1024];
          *buf = uv_buf_init(scratch, sizeof scratch);
        },
        on_read);
    self->conns_.push_back(std::move(c));
  }
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* c = static_cast<Conn*>(s->data);
    if (n < 0) {
      c->eof = true;
      c->close();
      return;
    }
    c->buffer.append(buf->base, static_cast<std::size_t>(n));
    Command cmd;
    while (!c->closed && parse(c->buffer, cmd)) {
      c->commands.push_back(cmd);
      c->owner->log.push_back(cmd);
      if (auto reply = c->owner->handler(*c, cmd)) c->send(*reply);
    }
  }
  // Takes one "*N\r\n($len\r\nbytes\r\n)*N" command off the front of `b`, if complete.
  static bool parse(std::string& b, Command& out) {
    out.clear();
    if (b.empty() || b[0] != '*') return false;
    std::size_t eol = b.find("\r\n");
    if (eol == std::string::npos) return false;
    int n = std::stoi(b.substr(1, eol - 1));
    std::size_t at = eol + 2;
    for (int i = 0; i < n; ++i) {
      if (at >= b.size() || b[at] != '$') return false;
      std::size_t e = b.find("\r\n", at);
      if (e == std::string::npos) return false;
      std::size_t len = std::stoul(b.substr(at + 1, e - at - 1));
      if (e + 2 + len + 2 > b.size()) return false;
      out.push_back(b.substr(e + 2, len));
      at = e + 2 + len + 2;
    }
    b.erase(0, at);
    return true;
  }

  uv_loop_t* loop_;
  uv_tcp_t server_{};
  int port_ = 0;
  std::vector<std::unique_ptr<Conn>> conns_;
};

struct Waiter final : RateDecisionWaiter {
  int calls = 0;
  bool ok = false;
  RateDecision decision;
  std::function<void()> then;
  void on_rate_decision(bool ok_, const RateDecision& d) override {
    ++calls;
    ok = ok_;
    decision = d;
    if (then) then();
  }
};

// A loop, a fake Redis and a limiter connected to it.
struct Fixture {
  explicit Fixture(std::uint64_t timeout_ms = 5000) {
    std::signal(SIGPIPE, SIG_IGN);
    set_log_level(LogLevel::error);  // outages are logged as warnings: keep the output clean
    uv_loop_init(&loop);
    redis = std::make_unique<FakeRedis>(&loop);
    limiter = std::make_unique<RedisRateLimiter>(&loop, "127.0.0.1", redis->port(), timeout_ms,
                                                 errors);
  }
  ~Fixture() {
    limiter->close();
    redis->close();
    uv_run(&loop, UV_RUN_DEFAULT);
    limiter.reset();
    redis.reset();
    CHECK(uv_loop_close(&loop) == 0);
    set_log_level(LogLevel::info);
  }
  Fixture(const Fixture&) = delete;
  Fixture& operator=(const Fixture&) = delete;

  template <typename F>
  void run_until(F done, int max_turns = 100000) {
    for (int i = 0; i < max_turns && !done(); ++i) uv_run(&loop, UV_RUN_ONCE);
    REQUIRE(done());
  }
  void wait_usable() {
    run_until([&] { return limiter->usable(); });
  }
  // Decision commands received so far (EVALSHA or EVAL), across connections.
  std::vector<Command> decisions() const {
    std::vector<Command> out;
    for (const Command& c : redis->log)
      if (!c.empty() && (c[0] == "EVALSHA" || c[0] == "EVAL")) out.push_back(c);
    return out;
  }

  uv_loop_t loop{};
  Counter errors;
  std::unique_ptr<FakeRedis> redis;
  std::unique_ptr<RedisRateLimiter> limiter;
};

}  // namespace

TEST_CASE("redis limiter: not used until Redis answered the SCRIPT LOAD on the connection") {
  Fixture f;
  Waiter w;
  // Connecting: decide() says at once that Redis cannot be asked (the caller applies
  // on_redis_failure without waiting).
  CHECK_FALSE(f.limiter->usable());
  CHECK(f.limiter->decide("k", 10, 5, &w) == nullptr);
  f.wait_usable();
  REQUIRE(f.redis->accepted() == 1);
  REQUIRE_FALSE(f.redis->conn(0).commands.empty());
  const Command& first = f.redis->conn(0).commands[0];
  CHECK(first[0] == "SCRIPT");
  CHECK(first[1] == "LOAD");
  CHECK(first[2] == RedisRateLimiter::script());
  CHECK(w.calls == 0);
  CHECK(f.errors.get() == 0);
}

TEST_CASE("redis limiter: a decision is sent as EVALSHA and delivered to its waiter") {
  Fixture f;
  f.wait_usable();
  Waiter w;
  RedisRateLimiter::Pending* p = f.limiter->decide("tenant:a", 10, 5, &w);
  REQUIRE(p != nullptr);
  // Never from inside decide().
  CHECK(w.calls == 0);
  f.run_until([&] { return f.decisions().size() == 1; });
  Command c = f.decisions()[0];
  REQUIRE(c.size() == 6);
  CHECK(c[0] == "EVALSHA");
  CHECK(c[1] == kSha);
  CHECK(c[2] == "1");
  CHECK(c[3] == "tenant:a");
  CHECK(c[4] == "100000.000");  // microseconds per token at 10/s
  CHECK(c[5] == "500000.000");  // burst 5 tokens
  f.redis->last().send(decision(0, 3, 250000, 40000));
  f.run_until([&] { return w.calls > 0; });
  CHECK(w.calls == 1);
  CHECK(w.ok);
  CHECK_FALSE(w.decision.allowed);
  CHECK(w.decision.remaining == 3);
  CHECK(w.decision.reset_us == 250000);
  CHECK(w.decision.retry_after_us == 40000);
  CHECK(f.errors.get() == 0);
}

TEST_CASE("redis limiter: pipelined decisions reach their own waiters") {
  Fixture f;
  f.wait_usable();
  Waiter a, b, c;
  REQUIRE(f.limiter->decide("a", 10, 1, &a));
  REQUIRE(f.limiter->decide("b", 10, 1, &b));
  REQUIRE(f.limiter->decide("c", 10, 1, &c));
  f.run_until([&] { return f.decisions().size() == 3; });
  f.redis->last().send(decision(1, 1, 0, 0) + decision(0, 2, 0, 0) + decision(1, 3, 0, 0));
  f.run_until([&] { return c.calls > 0; });
  CHECK(a.calls == 1);
  CHECK(b.calls == 1);
  CHECK(a.decision.allowed);
  CHECK(a.decision.remaining == 1);
  CHECK_FALSE(b.decision.allowed);
  CHECK(b.decision.remaining == 2);
  CHECK(c.decision.remaining == 3);
}

TEST_CASE("redis limiter: a waiter that cancels before the reply is never called") {
  Fixture f;
  f.wait_usable();
  Waiter gone, stays;
  RedisRateLimiter::Pending* p = f.limiter->decide("a", 10, 1, &gone);
  REQUIRE(p != nullptr);
  REQUIRE(f.limiter->decide("b", 10, 1, &stays));
  f.run_until([&] { return f.decisions().size() == 2; });
  f.limiter->cancel(p);
  f.redis->last().send(decision(1, 1, 0, 0) + decision(1, 2, 0, 0));
  f.run_until([&] { return stays.calls > 0; });
  CHECK(gone.calls == 0);
  CHECK(stays.ok);
  CHECK(stays.decision.remaining == 2);
  // The cancelled record is reused once its reply came back; a decision made with it goes
  // to the new waiter only.
  Waiter next;
  REQUIRE(f.limiter->decide("c", 10, 1, &next));
  f.run_until([&] { return f.decisions().size() == 3; });
  f.redis->last().send(decision(1, 7, 0, 0));
  f.run_until([&] { return next.calls > 0; });
  CHECK(next.decision.remaining == 7);
  CHECK(gone.calls == 0);
  CHECK(f.errors.get() == 0);
}

TEST_CASE("redis limiter: an error reply is a failure for the waiter and is counted") {
  Fixture f;
  f.wait_usable();
  Waiter w;
  REQUIRE(f.limiter->decide("a", 10, 1, &w));
  f.run_until([&] { return f.decisions().size() == 1; });
  f.redis->last().send("-ERR something broke\r\n");
  f.run_until([&] { return w.calls > 0; });
  CHECK_FALSE(w.ok);
  CHECK(f.errors.get() == 1);
  // One failure does not stop the limiter asking.
  CHECK(f.limiter->usable());
}

TEST_CASE("redis limiter: an unexpected reply shape is a failure, not a decision") {
  Fixture f;
  f.wait_usable();
  Waiter w;
  REQUIRE(f.limiter->decide("a", 10, 1, &w));
  f.run_until([&] { return f.decisions().size() == 1; });
  // Three elements instead of four; the caller must not read a decision out of it.
  f.redis->last().send("*3\r\n:1\r\n:1\r\n:1\r\n");
  f.run_until([&] { return w.calls > 0; });
  CHECK_FALSE(w.ok);
  CHECK(f.errors.get() == 1);
}

TEST_CASE("redis limiter: unanswered decisions time out in order; a late reply is dropped") {
  Fixture f(/*timeout_ms=*/5);
  f.wait_usable();
  std::vector<int> order;
  Waiter a, b;
  a.then = [&] { order.push_back(1); };
  b.then = [&] { order.push_back(2); };
  REQUIRE(f.limiter->decide("a", 10, 1, &a));
  REQUIRE(f.limiter->decide("b", 10, 1, &b));
  f.run_until([&] { return a.calls > 0 && b.calls > 0; });
  CHECK_FALSE(a.ok);
  CHECK_FALSE(b.ok);
  CHECK(order == std::vector<int>{1, 2});
  CHECK(f.errors.get() == 2);
  CHECK(f.limiter->usable());  // two failures: below the breaker's three
  // The answers come after all: nobody is called again, and they count as nothing.
  f.run_until([&] { return f.decisions().size() == 2; });
  f.redis->last().send(decision(1, 1, 0, 0) + decision(1, 1, 0, 0));
  Waiter probe;
  REQUIRE(f.limiter->decide("c", 10, 1, &probe));
  f.run_until([&] { return f.decisions().size() == 3; });
  f.redis->last().send(decision(1, 9, 0, 0));
  f.run_until([&] { return probe.calls > 0; });
  CHECK(probe.decision.remaining == 9);  // the third reply went to the third decision
  CHECK(a.calls == 1);
  CHECK(b.calls == 1);
  CHECK(f.errors.get() == 2);
}

TEST_CASE("redis limiter: a waiter cancelled before its timeout is not called by the timer") {
  Fixture f(/*timeout_ms=*/5);
  f.wait_usable();
  Waiter gone, stays;
  RedisRateLimiter::Pending* p = f.limiter->decide("a", 10, 1, &gone);
  REQUIRE(p);
  REQUIRE(f.limiter->decide("b", 10, 1, &stays));
  f.limiter->cancel(p);
  f.run_until([&] { return stays.calls > 0; });
  CHECK_FALSE(stays.ok);
  CHECK(gone.calls == 0);
  CHECK(f.errors.get() == 1);  // only the decision somebody waited for counts
}

TEST_CASE("redis limiter: three failures in a row stop asking, and the pause outlives a reconnect") {
  Fixture f(/*timeout_ms=*/5);
  f.wait_usable();
  Waiter w[3];
  for (Waiter& x : w) REQUIRE(f.limiter->decide("a", 10, 1, &x));
  f.run_until([&] { return w[2].calls > 0; });
  for (Waiter& x : w) CHECK_FALSE(x.ok);
  // The breaker opened: decide() answers at once, and the connection was dropped (it may be
  // dead without hiredis knowing).
  CHECK_FALSE(f.limiter->usable());
  Waiter refused;
  CHECK(f.limiter->decide("a", 10, 1, &refused) == nullptr);
  f.run_until([&] { return f.redis->conn(0).eof; });
  // A new connection is made after the back-off and Redis answers on it; the 1 s pause still
  // holds (a reconnect must not reopen the flood onto a Redis that just failed).
  f.run_until([&] { return f.redis->accepted() == 2 && !f.redis->conn(1).commands.empty(); });
  for (int i = 0; i < 50; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK_FALSE(f.limiter->usable());
  CHECK(f.limiter->decide("a", 10, 1, &refused) == nullptr);
  CHECK(refused.calls == 0);
}

TEST_CASE("redis limiter: a lost connection fails its decisions, and a new one is made") {
  Fixture f;
  f.wait_usable();
  Waiter w;
  REQUIRE(f.limiter->decide("a", 10, 1, &w));
  f.run_until([&] { return f.decisions().size() == 1; });
  f.redis->conn(0).close();
  f.run_until([&] { return w.calls > 0; });
  CHECK_FALSE(w.ok);
  CHECK_FALSE(f.limiter->usable());
  Waiter refused;
  CHECK(f.limiter->decide("a", 10, 1, &refused) == nullptr);
  // Back-off, reconnect, SCRIPT LOAD again: usable on the new connection.
  f.wait_usable();
  CHECK(f.redis->accepted() == 2);
  Waiter again;
  REQUIRE(f.limiter->decide("a", 10, 1, &again));
  f.run_until([&] { return f.redis->conn(1).commands.size() == 2; });
  f.redis->conn(1).send(decision(1, 4, 0, 0));
  f.run_until([&] { return again.calls > 0; });
  CHECK(again.ok);
  CHECK(again.decision.remaining == 4);
  CHECK(refused.calls == 0);
}

TEST_CASE("redis limiter: NOSCRIPT falls back to EVAL and loads the script again") {
  Fixture f;
  f.wait_usable();
  Waiter w;
  REQUIRE(f.limiter->decide("a", 10, 1, &w));
  f.run_until([&] { return f.decisions().size() == 1; });
  // From here the test answers every command itself, in order, as Redis would.
  f.redis->handler = [](FakeRedis::Conn&, const Command&) { return std::optional<std::string>(); };
  f.redis->last().send("-NOSCRIPT No matching script. Please use EVAL.\r\n");
  // The same decision is sent again with the whole script, and SCRIPT LOAD follows it.
  f.run_until([&] { return f.redis->last().commands.size() == 4; });
  const auto& cmds = f.redis->last().commands;
  CHECK(cmds[2][0] == "EVAL");
  CHECK(cmds[2][1] == RedisRateLimiter::script());
  CHECK(cmds[2][3] == "a");
  CHECK(cmds[3][0] == "SCRIPT");
  CHECK(w.calls == 0);  // the NOSCRIPT itself is not the answer
  f.redis->last().send(decision(1, 6, 0, 0) + bulk(kSha));
  f.run_until([&] { return w.calls > 0; });
  CHECK(w.ok);
  CHECK(w.decision.remaining == 6);
  CHECK(f.errors.get() == 0);
  // With the script loaded again, the next decision is an EVALSHA.
  Waiter next;
  REQUIRE(f.limiter->decide("b", 10, 1, &next));
  f.run_until([&] { return f.redis->last().commands.size() == 5; });
  CHECK(f.redis->last().commands[4][0] == "EVALSHA");
}

TEST_CASE("redis limiter: a failed SCRIPT LOAD leaves the connection unused and reconnects") {
  Fixture f;
  int loads = 0;
  f.redis->handler = [&](FakeRedis::Conn&, const Command& c) -> std::optional<std::string> {
    if (c[0] != "SCRIPT") return std::nullopt;
    // The first connection's Redis refuses the script; the next one takes it.
    return ++loads == 1 ? std::string("-ERR scripting disabled\r\n") : bulk(kSha);
  };
  f.run_until([&] { return f.redis->accepted() >= 1 && f.redis->conn(0).eof; });
  CHECK_FALSE(f.limiter->usable());
  CHECK(f.errors.get() >= 1);
  f.wait_usable();
  CHECK(f.redis->accepted() == 2);
}

TEST_CASE("redis limiter: close() calls no waiter back") {
  Fixture f;
  f.wait_usable();
  Waiter w;
  REQUIRE(f.limiter->decide("a", 10, 1, &w));
  f.run_until([&] { return f.decisions().size() == 1; });
  f.limiter->close();
  CHECK_FALSE(f.limiter->usable());
  for (int i = 0; i < 20; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK(w.calls == 0);
}

TEST_CASE("redis limiter: a waiter may ask again from inside its callback") {
  Fixture f(/*timeout_ms=*/5);
  f.wait_usable();
  Waiter second;
  Waiter first;
  RedisRateLimiter::Pending* again = nullptr;
  first.then = [&] { again = f.limiter->decide("b", 10, 1, &second); };
  REQUIRE(f.limiter->decide("a", 10, 1, &first));
  // The first times out; its callback asks again, which must get its own full timeout.
  f.run_until([&] { return first.calls > 0; });
  REQUIRE(again != nullptr);
  CHECK(second.calls == 0);
  f.run_until([&] { return second.calls > 0; });
  CHECK_FALSE(second.ok);
  CHECK(first.calls == 1);
}

TEST_CASE("redis limiter: a Redis that always answers too late still stops being asked") {
  // Every reply comes after the timeout. Each decision is a failure for its waiter; the late
  // replies must not count as successes in between, or the three-in-a-row breaker never
  // opens and every request waits the whole timeout for as long as Redis stays slow.
  Fixture f(/*timeout_ms=*/5);
  f.wait_usable();
  for (int i = 0; i < 3; ++i) {
    Waiter w;
    REQUIRE(f.limiter->decide("a", 10, 1, &w));
    f.run_until([&] { return w.calls > 0; });
    CHECK_FALSE(w.ok);
    if (i == 2) break;  // the third failure opens the breaker (and drops the connection)
    f.run_until([&] { return f.decisions().size() == static_cast<std::size_t>(i + 1); });
    f.redis->last().send(decision(1, 1, 0, 0));  // the late answer
    for (int t = 0; t < 50; ++t) uv_run(&f.loop, UV_RUN_NOWAIT);
  }
  CHECK_FALSE(f.limiter->usable());
  Waiter refused;
  CHECK(f.limiter->decide("a", 10, 1, &refused) == nullptr);
}
