// ConnectionPool (upstream/pool.h): idle reuse newest first, the connection cap, FIFO waiters
// handed a connection when one frees (or when a closed one makes room), cancellation, max_idle
// and idle_timeout. Against a real loopback backend on a private loop, since a connection only
// becomes idle after it carried a complete response.
#include "upstream/pool.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <vector>

#include "upstream/connection.h"
#include "upstream/loopback_backend.h"

using namespace bulwark;

namespace {

using test::PoolFixture;
using test::RecordingClient;

const char kOk[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

// A waiter that records the connections it was handed.
struct Waiter final : PoolWaiter {
  std::vector<UpstreamConnection*> got;
  void on_pool_connection(UpstreamStream* conn) override {
    got.push_back(static_cast<UpstreamConnection*>(conn));
  }
  void on_pool_failure(UpstreamError) override { ++failures; }
  int failures = 0;
};

}  // namespace

TEST_CASE("pool: a released keep-alive connection is reused by the next acquire") {
  PoolFixture f;
  f.backend->auto_response = kOk;
  UpstreamConnection* c = f.make_idle();
  CHECK(f.pool->total() == 1);
  CHECK(f.pool->idle() == 1);
  CHECK(f.stats.idle.get() == 1);
  CHECK(f.stats.active.get() == 0);
  // The next request gets the same connection, not a new one, and it says it is reused
  // (the caller retries a request a stale reused connection fails).
  UpstreamConnection* again = f.pool->acquire(nullptr);
  CHECK(again == c);
  RecordingClient client;
  PoolFixture::send_get(again, &client);
  CHECK(again->reused());
  CHECK(f.pool->idle() == 0);
  CHECK(f.stats.active.get() == 1);
  f.run_until([&] { return client.complete; });
  CHECK(client.body == "ok");
  CHECK(f.backend->accepted() == 1);  // one TCP connection carried both requests
  again->release(true);
}

TEST_CASE("pool: idle connections are reused newest first") {
  PoolFixture f;
  f.backend->auto_response = kOk;
  // Two connections in use at once, released a then b: b is the newest idle one.
  UpstreamConnection* a = f.pool->acquire(nullptr);
  UpstreamConnection* b = f.pool->acquire(nullptr);
  REQUIRE(a != b);
  RecordingClient ca, cb;
  PoolFixture::send_get(a, &ca);
  PoolFixture::send_get(b, &cb);
  f.run_until([&] { return ca.complete && cb.complete; });
  a->release(true);
  b->release(true);
  REQUIRE(f.pool->idle() == 2);
  CHECK(f.pool->acquire(nullptr) == b);
  // acquire() alone leaves it listed: attach() takes it off, then a is the newest.
  RecordingClient c1;
  PoolFixture::send_get(b, &c1);
  CHECK(f.pool->acquire(nullptr) == a);
  f.run_until([&] { return c1.complete; });
  b->release(true);
}

TEST_CASE("pool: acquire_new never hands out an idle connection") {
  PoolFixture f;
  f.backend->auto_response = kOk;
  UpstreamConnection* idle = f.make_idle();
  UpstreamConnection* fresh = f.pool->acquire_new(nullptr);
  REQUIRE(fresh != nullptr);
  CHECK(fresh != idle);
  CHECK_FALSE(fresh->reused());
  CHECK(f.pool->total() == 2);
  CHECK(f.pool->idle() == 1);
  fresh->close();
}

TEST_CASE("pool: at the cap, waiters queue in order and get connections as they are released") {
  PoolFixture f(/*cap=*/1);
  f.backend->auto_response = kOk;
  UpstreamConnection* c = f.pool->acquire(nullptr);
  REQUIRE(c != nullptr);
  Waiter first, second;
  CHECK(f.pool->acquire(&first) == nullptr);
  CHECK(f.pool->acquire(&second) == nullptr);
  CHECK(first.waiting());
  CHECK(second.waiting());
  // Asking again while waiting does not queue the waiter twice.
  CHECK(f.pool->acquire(&first) == nullptr);
  CHECK(f.pool->total() == 1);  // never above the cap

  RecordingClient client;
  PoolFixture::send_get(c, &client);
  f.run_until([&] { return client.complete; });
  c->release(true);
  // The released connection goes to the longest waiting request, at once.
  REQUIRE(first.got.size() == 1);
  CHECK(first.got[0] == c);
  CHECK_FALSE(first.waiting());
  CHECK(second.got.empty());
  CHECK(second.waiting());

  // The first waiter uses it; on the next release the second gets it.
  RecordingClient client2;
  PoolFixture::send_get(c, &client2);
  CHECK(c->reused());
  f.run_until([&] { return client2.complete; });
  c->release(true);
  REQUIRE(second.got.size() == 1);
  CHECK(second.got[0] == c);
  CHECK(first.got.size() == 1);  // only once
  // Nobody waits any more: the next release puts it on the idle list.
  RecordingClient client3;
  PoolFixture::send_get(c, &client3);
  f.run_until([&] { return client3.complete; });
  c->release(true);
  CHECK(f.pool->idle() == 1);
  CHECK(f.backend->accepted() == 1);
}

TEST_CASE("pool: a cancelled waiter is skipped; the next one gets the connection") {
  PoolFixture f(/*cap=*/1);
  f.backend->auto_response = kOk;
  UpstreamConnection* c = f.pool->acquire(nullptr);
  Waiter gone, next;
  REQUIRE(f.pool->acquire(&gone) == nullptr);
  REQUIRE(f.pool->acquire(&next) == nullptr);
  f.pool->cancel_wait(&gone);
  CHECK_FALSE(gone.waiting());
  // Cancelling twice (or a waiter that never waited) is harmless.
  f.pool->cancel_wait(&gone);
  RecordingClient client;
  PoolFixture::send_get(c, &client);
  f.run_until([&] { return client.complete; });
  c->release(true);
  CHECK(gone.got.empty());
  REQUIRE(next.got.size() == 1);
  CHECK(next.got[0] == c);
}

TEST_CASE("pool: a closed connection makes room, and the waiter gets a new one") {
  PoolFixture f(/*cap=*/1);
  f.backend->auto_response = kOk;
  UpstreamConnection* c = f.pool->acquire(nullptr);
  Waiter w;
  REQUIRE(f.pool->acquire(&w) == nullptr);
  // Not reusable (say, the response said Connection: close): closed, and the waiter gets a
  // connection that is being opened.
  c->release(false);
  REQUIRE(w.got.size() == 1);
  CHECK(w.got[0] != nullptr);
  CHECK(f.pool->total() == 1);
  RecordingClient client;
  PoolFixture::send_get(w.got[0], &client);
  f.run_until([&] { return client.complete; });
  CHECK(client.body == "ok");
  CHECK_FALSE(w.got[0]->reused());
  w.got[0]->release(true);
}

TEST_CASE("pool: a connection that is not keep-alive is closed on release, never idle") {
  PoolFixture f;
  f.backend->auto_response = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
  UpstreamConnection* c = f.pool->acquire(nullptr);
  RecordingClient client;
  PoolFixture::send_get(c, &client);
  f.run_until([&] { return client.complete; });
  CHECK_FALSE(c->keep_alive());
  c->release(true);  // the caller would reuse it; the connection knows better
  CHECK(f.pool->idle() == 0);
  CHECK(f.pool->total() == 0);
  CHECK(f.stats.active.get() == 0);
}

TEST_CASE("pool: idle connections beyond max_idle are closed, the oldest first") {
  PoolFixture f(/*cap=*/4, /*max_idle=*/1);
  f.backend->auto_response = kOk;
  UpstreamConnection* a = f.pool->acquire(nullptr);
  UpstreamConnection* b = f.pool->acquire(nullptr);
  RecordingClient ca, cb;
  PoolFixture::send_get(a, &ca);
  PoolFixture::send_get(b, &cb);
  f.run_until([&] { return ca.complete && cb.complete; });
  a->release(true);
  b->release(true);  // two idle, one allowed: a (older) goes
  CHECK(f.pool->idle() == 1);
  CHECK(f.pool->total() == 1);
  CHECK(f.pool->acquire(nullptr) == b);
  CHECK(f.stats.idle.get() == 1);
}

TEST_CASE("pool: idle_timeout closes an idle connection; a long one keeps it") {
  SUBCASE("expired") {
    // A zero timeout is due at the next turn of the loop.
    PoolFixture f(4, 4, /*idle_timeout_ms=*/0);
    f.backend->auto_response = kOk;
    f.make_idle();
    REQUIRE(f.pool->idle() == 1);
    f.run_until([&] { return f.pool->total() == 0; });
    CHECK(f.pool->idle() == 0);
    CHECK(f.stats.idle.get() == 0);
    // The backend sees the connection end.
    f.run_until([&] { return f.backend->conn(0).eof; });
  }
  SUBCASE("not yet") {
    PoolFixture f(4, 4, /*idle_timeout_ms=*/60000);
    f.backend->auto_response = kOk;
    f.make_idle();
    for (int i = 0; i < 20; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
    CHECK(f.pool->idle() == 1);
    CHECK(f.pool->total() == 1);
  }
}

TEST_CASE("pool: an idle connection the backend closes leaves the pool at once") {
  PoolFixture f;
  f.backend->auto_response = kOk;
  f.make_idle();
  REQUIRE(f.pool->idle() == 1);
  f.backend->conn(0).close();
  // The idle connection is watched: its EOF closes it, so no request is sent on it later.
  f.run_until([&] { return f.pool->total() == 0; });
  CHECK(f.pool->idle() == 0);
  // The next request gets a new connection.
  UpstreamConnection* c = f.pool->acquire(nullptr);
  REQUIRE(c != nullptr);
  CHECK_FALSE(c->reused());
  f.run_until([&] { return f.backend->accepted() == 2; });
}

TEST_CASE("pool: close_idle closes only idle connections") {
  PoolFixture f;
  f.backend->auto_response = kOk;
  f.make_idle();
  UpstreamConnection* busy = f.pool->acquire_new(nullptr);
  REQUIRE(f.pool->total() == 2);
  f.pool->close_idle();
  CHECK(f.pool->idle() == 0);
  CHECK(f.pool->total() == 1);
  busy->close();
  CHECK(f.pool->total() == 0);
}

TEST_CASE("pool: close_all closes everything, drops waiters without a call, and opens no more") {
  PoolFixture f(/*cap=*/1);
  f.backend->auto_response = kOk;
  UpstreamConnection* c = f.pool->acquire(nullptr);
  REQUIRE(c != nullptr);
  Waiter w;
  REQUIRE(f.pool->acquire(&w) == nullptr);
  f.pool->close_all();
  CHECK(f.pool->total() == 0);
  CHECK_FALSE(w.waiting());
  // Closing the busy connection made room, but a closed pool hands nothing out.
  CHECK(w.got.empty());
  CHECK(f.pool->acquire(nullptr) == nullptr);
  CHECK(f.stats.active.get() == 0);
}
