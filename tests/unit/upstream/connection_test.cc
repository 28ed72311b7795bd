// UpstreamConnection (upstream/connection.h) against a real loopback backend on a private
// loop: what it reports to its client for each response shape, whether it may be reused
// (keep_alive), how a backend that goes away mid-response is reported, connect failures and
// the connect timeout, read pausing, and drained notifications for large request bodies.
#include "upstream/connection.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <string>
#include <vector>

#include "upstream/loopback_backend.h"
#include "upstream/pool.h"

using namespace bulwark;

namespace {

using test::PoolFixture;
using test::RecordingClient;
using Events = std::vector<std::string>;

// A connection of `f`'s pool, connected, with one GET sent; the backend's side of it is
// returned in `backend_conn`.
UpstreamConnection* start(PoolFixture& f, RecordingClient& client, bool head = false) {
  UpstreamConnection* c = f.pool->acquire(nullptr);
  REQUIRE(c != nullptr);
  PoolFixture::send_get(c, &client, head);
  f.run_until([&] {
    return f.backend->accepted() > 0 &&
           f.backend->conn(f.backend->accepted() - 1).received.find("\r\n\r\n") !=
               std::string::npos;
  });
  REQUIRE(c->connected());
  return c;
}
test::LoopbackBackend::Conn& peer(PoolFixture& f) {
  return f.backend->conn(f.backend->accepted() - 1);
}

}  // namespace

TEST_CASE("upstream connection: a Content-Length response is reported head, body, complete") {
  PoolFixture f;
  RecordingClient client;
  UpstreamConnection* c = start(f, client);
  CHECK(client.events == Events{"connected"});
  CHECK(peer(f).received == "GET / HTTP/1.1\r\nHost: app\r\n\r\n");
  peer(f).write("HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhel");
  f.run_until([&] { return client.body.size() == 3; });
  CHECK(client.events == Events{"connected", "headers 201"});
  CHECK(c->status() == 201);
  CHECK(c->status_text() == "Created");
  CHECK(c->headers().get("x-a") == "1");
  CHECK(c->has_content_length());
  CHECK(c->content_length() == 5);
  CHECK_FALSE(c->body_chunked());
  CHECK_FALSE(client.complete);  // two bytes are still to come
  peer(f).write("lo");
  f.run_until([&] { return client.complete; });
  CHECK(client.body == "hello");
  CHECK(client.events == Events{"connected", "headers 201", "complete"});
  CHECK(c->keep_alive());
  c->release(true);
  CHECK(f.pool->idle() == 1);
}

TEST_CASE("upstream connection: a chunked body is decoded chunk by chunk, with trailers") {
  PoolFixture f;
  RecordingClient client;
  UpstreamConnection* c = start(f, client);
  peer(f).write(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n"
      "2;ext=1\r\nde\r\n"
      "0\r\nX-Checksum: 42\r\n\r\n");
  f.run_until([&] { return client.complete || client.errored; });
  CHECK(c->body_chunked());
  CHECK(client.body == "abcde");
  CHECK(client.events == Events{"connected", "headers 200", "chunk 3", "chunk end", "chunk 2",
                                "chunk end", "complete"});
  CHECK(c->trailers().get("x-checksum") == "42");
  CHECK(c->keep_alive());
  c->release(true);
}

TEST_CASE("upstream connection: a response split across reads is put together") {
  PoolFixture f;
  RecordingClient client;
  UpstreamConnection* c = start(f, client);
  // The head arrives in two reads (the second starts mid-line), then the chunked body.
  peer(f).write("HTTP/1.1 200 OK\r\nTransfer-Enc");
  for (int i = 0; i < 5; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK(client.events == Events{"connected"});
  peer(f).write("oding: chunked\r\n\r\n4\r\nwx");
  f.run_until([&] { return client.body.size() == 2; });
  peer(f).write("yz\r\n0\r\n\r\n");
  f.run_until([&] { return client.complete || client.errored; });
  CHECK(client.body == "wxyz");
  CHECK_FALSE(client.errored);
  c->release(true);
}

TEST_CASE("upstream connection: keep_alive says whether the connection can carry another request") {
  PoolFixture f;
  RecordingClient client;
  std::string response;
  bool expected = true;
  SUBCASE("HTTP/1.1 by default") {
    response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    expected = true;
  }
  SUBCASE("Connection: close") {
    response = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    expected = false;
  }
  SUBCASE("HTTP/1.0 without keep-alive") {
    response = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    expected = false;
  }
  SUBCASE("HTTP/1.0 with keep-alive") {
    response = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
    expected = true;
  }
  SUBCASE("bytes after the response") {
    // Nobody asked for them: the connection's framing cannot be trusted any more.
    response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA";
    expected = false;
  }
  SUBCASE("bytes after a chunked response") {
    response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nEXTRA";
    expected = false;
  }
  UpstreamConnection* c = start(f, client);
  peer(f).write(response);
  f.run_until([&] { return client.complete || client.errored; });
  REQUIRE(client.complete);
  CHECK(c->keep_alive() == expected);
  c->release(true);
  // Only a keep-alive connection goes back to the pool.
  CHECK(f.pool->idle() == (expected ? 1u : 0u));
}

TEST_CASE("upstream connection: a reused connection carries the next request") {
  PoolFixture f;
  f.backend->auto_response = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none";
  UpstreamConnection* c = f.make_idle();
  CHECK_FALSE(c->reused());  // carried one request, but was new for it
  f.backend->auto_response = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo";
  RecordingClient client;
  REQUIRE(f.pool->acquire(nullptr) == c);
  PoolFixture::send_get(c, &client);
  CHECK(c->reused());
  f.run_until([&] { return client.complete; });
  // The second response's head and body, not left-overs of the first.
  CHECK(client.body == "two");
  CHECK(client.events == Events{"headers 200", "complete"});
  c->release(true);
}

TEST_CASE("upstream connection: no body is read after HEAD, 204 or 304") {
  PoolFixture f;
  RecordingClient client;
  bool head = false;
  std::string response;
  SUBCASE("HEAD with Content-Length") {
    head = true;
    response = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
  }
  SUBCASE("204") { response = "HTTP/1.1 204 No Content\r\n\r\n"; }
  SUBCASE("304 with Content-Length") {
    response = "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n";
  }
  UpstreamConnection* c = start(f, client, head);
  peer(f).write(response);
  f.run_until([&] { return client.complete || client.errored; });
  CHECK(client.complete);
  CHECK(client.body.empty());
  CHECK(c->keep_alive());
  c->release(true);
  CHECK(f.pool->idle() == 1);
}

TEST_CASE("upstream connection: 1xx heads are interim; the final head follows") {
  PoolFixture f;
  RecordingClient client;
  UpstreamConnection* c = start(f, client);
  peer(f).write(
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
  f.run_until([&] { return client.complete || client.errored; });
  CHECK(client.events == Events{"connected", "interim 100", "interim 103", "headers 200", "complete"});
  CHECK(client.body == "x");
  c->release(true);
}

TEST_CASE("upstream connection: a body delimited by the connection's end completes at EOF") {
  PoolFixture f;
  RecordingClient client;
  UpstreamConnection* c = start(f, client);
  peer(f).write("HTTP/1.1 200 OK\r\n\r\nuntil the end");
  f.run_until([&] { return client.body.size() == 13; });
  CHECK_FALSE(client.complete);
  peer(f).close();
  f.run_until([&] { return client.complete || client.errored; });
  CHECK(client.complete);
  CHECK_FALSE(client.errored);
  CHECK_FALSE(c->keep_alive());
  c->release(true);
  CHECK(f.pool->total() == 0);  // never back in the pool
}

TEST_CASE("upstream connection: the backend going away mid-response is a reset") {
  PoolFixture f;
  RecordingClient client;
  start(f, client);
  std::string partial;
  SUBCASE("EOF mid-body") { partial = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"; }
  SUBCASE("EOF mid-chunk") {
    partial = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12";
  }
  SUBCASE("EOF mid-head") { partial = "HTTP/1.1 200 OK\r\nContent-Le"; }
  SUBCASE("EOF before any byte") {}
  if (!partial.empty()) peer(f).write(partial);
  for (int i = 0; i < 5; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  peer(f).close();
  f.run_until([&] { return client.errored || client.complete; });
  CHECK(client.errored);
  CHECK_FALSE(client.complete);
  CHECK(client.error == UpstreamError::reset);
  CHECK(client.error_detail.empty());
  CHECK(f.pool->total() == 0);  // the failed connection is closed, not pooled
}

TEST_CASE("upstream connection: a RST from the backend mid-body is a reset") {
  PoolFixture f;
  RecordingClient client;
  start(f, client);
  peer(f).write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345");
  f.run_until([&] { return client.body.size() == 5; });
  peer(f).reset();
  f.run_until([&] { return client.errored || client.complete; });
  CHECK(client.errored);
  CHECK(client.error == UpstreamError::reset);
}

TEST_CASE("upstream connection: a malformed response is a protocol error with a detail") {
  PoolFixture f;
  RecordingClient client;
  std::string response;
  std::string detail;
  SUBCASE("not HTTP") { response = "SSH-2.0-OpenSSH\r\n\r\n"; }
  SUBCASE("Content-Length and Transfer-Encoding") {
    response = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    // llhttp refuses this one itself; either way the detail names the problem.
    detail = "Transfer-Encoding";
  }
  SUBCASE("a transfer coding other than chunked") {
    response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
    detail = "a transfer coding other than chunked";  // check_head()'s own
  }
  SUBCASE("a bad chunk size") {
    response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
  }
  SUBCASE("a head above max_response_header_bytes") {
    f.config.max_response_header_bytes = 64;
    response = "HTTP/1.1 200 OK\r\nX-Long: " + std::string(100, 'a') + "\r\n\r\n";
  }
  start(f, client);
  peer(f).write(response);
  f.run_until([&] { return client.errored || client.complete; });
  CHECK(client.errored);
  CHECK(client.error == UpstreamError::protocol);
  CHECK_FALSE(client.error_detail.empty());
  if (!detail.empty()) CHECK(client.error_detail.find(detail) != std::string::npos);
  CHECK(f.pool->total() == 0);
  // The backend sees the connection closed.
  f.run_until([&] { return peer(f).eof; });
}

TEST_CASE("upstream connection: a refused connect is a connect_failure") {
  PoolFixture f;
  // Nothing listens on the port any more.
  f.backend->close();
  for (int i = 0; i < 5; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  RecordingClient client;
  UpstreamConnection* c = f.pool->acquire(nullptr);
  PoolFixture::send_get(c, &client);
  f.run_until([&] { return client.errored; });
  CHECK(client.error == UpstreamError::connect_failure);
  CHECK(f.stats.connects[static_cast<int>(ConnectResult::failure)].get() == 1);
  CHECK(f.pool->total() == 0);
}

TEST_CASE("upstream connection: a connect not done within connect_timeout is a connect_timeout") {
  PoolFixture f;
  // A zero timeout expires in the timer phase of the next loop turn, before the poll phase
  // that would see the loopback connect complete.
  f.config.connect_timeout_ms = 0;
  RecordingClient client;
  UpstreamConnection* c = f.pool->acquire(nullptr);
  PoolFixture::send_get(c, &client);
  f.run_until([&] { return client.errored || client.complete; });
  CHECK(client.errored);
  CHECK(client.error == UpstreamError::connect_timeout);
  CHECK(f.stats.connects[static_cast<int>(ConnectResult::timeout)].get() == 1);
  CHECK(f.stats.connects[static_cast<int>(ConnectResult::success)].get() == 0);
}

TEST_CASE("upstream connection: nothing is reported while reading is paused") {
  PoolFixture f;
  RecordingClient client;
  UpstreamConnection* c = start(f, client);
  c->pause_reading();
  peer(f).write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  for (int i = 0; i < 20; ++i) uv_run(&f.loop, UV_RUN_NOWAIT);
  CHECK(client.events == Events{"connected"});
  c->resume_reading();
  f.run_until([&] { return client.complete; });
  CHECK(client.body == "ok");
  c->release(true);
}

TEST_CASE("upstream connection: an idle connection that receives bytes is closed") {
  PoolFixture f;
  f.backend->auto_response = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  f.make_idle();
  REQUIRE(f.pool->idle() == 1);
  // A response nobody asked for: the next request would read it as its own.
  f.backend->conn(0).write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  f.run_until([&] { return f.pool->total() == 0; });
}

TEST_CASE("upstream connection: a large request body is queued and drained is reported") {
  PoolFixture f;
  RecordingClient client;
  UpstreamConnection* c = start(f, client);
  // Far more than the socket takes at once: the rest is queued (the caller pauses its
  // client above the high mark), and drained comes once the backend read enough for the
  // queue to fall below the low mark.
  std::size_t head = peer(f).received.size();
  // The request head's own queued write (sent while connecting) may have reported one.
  int drained_before = client.drained;
  std::string body(16 * 1024 * 1024, 'b');
  c->out().add(body);
  REQUIRE(c->flush());
  CHECK(c->queued_bytes() > kHighWater);
  CHECK(client.drained == drained_before);
  f.run_until([&] { return client.drained > drained_before; });
  CHECK(c->queued_bytes() < kLowWater);
  f.run_until([&] { return peer(f).received.size() == head + body.size(); });
  c->close();
}

TEST_CASE("upstream connection: after a 101 the bytes are tunnelled, including those in the head's read") {
  PoolFixture f;
  RecordingClient client;
  UpstreamConnection* c = start(f, client);
  // The client switches the connection to tunnel mode as soon as the 101 is complete.
  client.on_complete = [&] { c->start_tunnel(); };
  peer(f).write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
      "early");
  f.run_until([&] { return client.events.size() >= 4; });
  CHECK(client.events == Events{"connected", "headers 101", "complete", "tunnel early"});
  peer(f).write("later");
  f.run_until([&] { return client.events.size() >= 5; });
  CHECK(client.events.back() == "tunnel later");
  c->release(false);
}
