// ClientConnection (pipeline/client_connection.h, request_parse.cc) driven over loopback TCP
// on a private loop (proxy_fixture.h): requests proxied to a loopback backend, pipelined
// requests answered in order and sent upstream one at a time, malformed requests answered 400
// and the connection closed, and a keep-alive connection between requests holding no Exchange
// and no request buffers.
#include "pipeline/client_connection.h"

#include <doctest/doctest.h>
#include <uv.h>

#include <string>

#include "pipeline/proxy_fixture.h"

using namespace bulwark;

namespace {

using test::ClientResponse;
using test::get;
using test::ok;
using test::path_of;
using test::ProxyFixture;

// How many request heads the backend has received, over all its connections.
std::size_t heads_received(test::LoopbackBackend& b) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < b.accepted(); ++i) {
    const std::string& r = b.conn(i).received;
    for (std::size_t at = r.find("\r\n\r\n"); at != std::string::npos; at = r.find("\r\n\r\n", at + 4))
      ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("client connection: a request is proxied to the backend and its response relayed") {
  ProxyFixture f;
  f.backend->responder = [](const std::string& head) { return ok("you asked for " + path_of(head)); };
  test::TestClient& c = f.connect();
  c.send(get("/hello?x=1"));
  ClientResponse r = f.response(c);
  CHECK(r.status == 200);
  CHECK(r.body == "you asked for /hello?x=1");
  REQUIRE(f.backend->accepted() == 1);
  CHECK(f.backend->conn(0).received.rfind("GET /hello?x=1 HTTP/1.1\r\n", 0) == 0);
  CHECK_FALSE(c.eof);  // keep-alive
}

TEST_CASE("client connection: pipelined requests are answered in order") {
  ProxyFixture f;
  f.backend->responder = [](const std::string& head) { return ok(path_of(head)); };
  test::TestClient& c = f.connect();
  // Three requests in one write: all parsed from one read.
  c.send(get("/one") + get("/two") + get("/three"));
  CHECK(f.response(c).body == "/one");
  CHECK(f.response(c).body == "/two");
  CHECK(f.response(c).body == "/three");
  CHECK(c.received.empty());  // nothing else was sent
  CHECK_FALSE(c.eof);
}

TEST_CASE("client connection: a pipelined request goes upstream only after the previous response") {
  ProxyFixture f;  // the backend answers by hand
  test::TestClient& c = f.connect();
  c.send(get("/a") + get("/b"));
  f.run_until([&] { return heads_received(*f.backend) == 1; });
  f.settle();
  // /b waits in the connection, parsed but not sent: requests are served one at a time.
  CHECK(heads_received(*f.backend) == 1);
  CHECK(f.backend->conn(0).received.find("/b") == std::string::npos);
  CHECK(f.worker->exchanges().in_use() == 1);
  f.backend->conn(0).write(ok("A"));
  CHECK(f.response(c).body == "A");
  // Now /b goes, on the same (reused) upstream connection.
  f.run_until([&] { return heads_received(*f.backend) == 2; });
  CHECK(f.backend->accepted() == 1);
  CHECK(f.backend->conn(0).received.find("GET /b ") != std::string::npos);
  f.backend->conn(0).write(ok("B"));
  CHECK(f.response(c).body == "B");
}

TEST_CASE("client connection: a malformed request is answered 400 and the connection closed") {
  ProxyFixture f;
  f.backend->auto_response = ok("never");
  std::string bad;
  SUBCASE("a broken request line") { bad = "GET / HTTP/1.1 junk\r\nHost: example.com\r\n\r\n"; }
  SUBCASE("a header line without a colon") {
    bad = "GET / HTTP/1.1\r\nHost: example.com\r\nno colon here\r\n\r\n";
  }
  SUBCASE("a space before the colon") { bad = "GET / HTTP/1.1\r\nHost : example.com\r\n\r\n"; }
  // llhttp (non-strict) lets these through in the target; found by tests/fuzz/fuzz_request.
  SUBCASE("a form feed in the target") { bad = "GET /\f HTTP/1.1\r\nHost: example.com\r\n\r\n"; }
  SUBCASE("a tab in the target") { bad = "GET /a\tb HTTP/1.1\r\nHost: example.com\r\n\r\n"; }
  SUBCASE("Content-Length twice, differing") {
    bad = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
  }
  test::TestClient& c = f.connect();
  c.send(bad);
  ClientResponse r = f.response(c);
  CHECK(r.status == 400);
  CHECK(r.head.find("Connection: close") != std::string::npos);
  // Then the proxy closes the connection (after the reply: a FIN, not a reset); it lingers
  // until the client closes too.
  f.run_until([&] { return c.eof; });
  c.close();
  f.run_until([&] { return f.listener().connections == 0; });
  CHECK(c.received.empty());
  CHECK(f.backend->accepted() == 0);  // nothing of it went upstream
}

TEST_CASE("client connection: a good request before a malformed one is answered first") {
  ProxyFixture f;
  f.backend->responder = [](const std::string& head) { return ok(path_of(head)); };
  test::TestClient& c = f.connect();
  c.send(get("/fine") + "BROKEN\r\n\r\n");
  ClientResponse first = f.response(c);
  CHECK(first.status == 200);
  CHECK(first.body == "/fine");
  ClientResponse second = f.response(c);
  CHECK(second.status == 400);
  f.run_until([&] { return c.eof; });
  CHECK(heads_received(*f.backend) == 1);
}

TEST_CASE("client connection: between requests a keep-alive connection holds no Exchange") {
  ProxyFixture f;  // the backend answers by hand
  // Put one buffer set on the worker's free list, to see whether the connection gives the
  // one it uses back.
  RequestBuffers* spare = f.worker->acquire_buffers();
  f.worker->release_buffers(spare);
  test::TestClient& c = f.connect();
  CHECK(f.worker->exchanges().in_use() == 0);  // a new connection holds none yet
  c.send(get("/a"));
  f.run_until([&] { return heads_received(*f.backend) == 1; });
  // While the request is in flight it has one (and the buffers).
  CHECK(f.worker->exchanges().in_use() == 1);
  f.backend->conn(0).write(ok("A"));
  CHECK(f.response(c).body == "A");
  f.settle();
  CHECK_FALSE(c.eof);
  // Idle on keep-alive: the exchange is retired and the buffers are back on the free list.
  CHECK(f.worker->exchanges().in_use() == 0);
  RequestBuffers* again = f.worker->acquire_buffers();
  CHECK(again == spare);
  f.worker->release_buffers(again);
  // And the next request on the connection works from fresh ones.
  c.send(get("/b"));
  f.run_until([&] { return heads_received(*f.backend) == 2; });
  CHECK(f.worker->exchanges().in_use() == 1);
  f.backend->conn(0).write(ok("B"));
  CHECK(f.response(c).body == "B");
  f.settle();
  CHECK(f.worker->exchanges().in_use() == 0);
}

TEST_CASE("client connection: a client that half-closes after its requests still gets the answers") {
  ProxyFixture f;
  f.backend->responder = [](const std::string& head) { return ok(path_of(head)); };
  test::TestClient& c = f.connect();
  c.send(get("/x") + get("/y"));
  auto* req = new uv_shutdown_t;
  uv_shutdown(req, reinterpret_cast<uv_stream_t*>(&c.tcp), [](uv_shutdown_t* r, int) { delete r; });
  CHECK(f.response(c).body == "/x");
  CHECK(f.response(c).body == "/y");
  // Everything answered: the proxy closes.
  f.run_until([&] { return c.eof; });
  f.run_until([&] { return f.listener().connections == 0; });
}

TEST_CASE("client connection: a request for no route is answered locally, the connection kept") {
  ProxyFixture f([](Config& cfg) { cfg.listeners[0].routes[0].match.prefix = "/api"; });
  f.backend->auto_response = ok("never");
  test::TestClient& c = f.connect();
  c.send(get("/elsewhere"));
  ClientResponse r = f.response(c);
  CHECK(r.status == 404);
  CHECK(f.backend->accepted() == 0);
  f.settle();
  CHECK_FALSE(c.eof);
  CHECK(f.worker->exchanges().in_use() == 0);
}

TEST_CASE("client connection: a request head above max_header_bytes is refused 431 and closed") {
  ProxyFixture f([](Config& c) { c.listeners[0].max_header_bytes = 256; });
  f.backend->auto_response = ok("never");
  test::TestClient& c = f.connect();
  c.send("GET / HTTP/1.1\r\nHost: example.com\r\nX-Big: " + std::string(400, 'a') + "\r\n\r\n");
  ClientResponse r = f.response(c);
  CHECK(r.status == 431);
  f.run_until([&] { return c.eof; });
  CHECK(f.backend->accepted() == 0);
}

TEST_CASE("client connection: a Content-Length above max_body_bytes is refused 413") {
  ProxyFixture f([](Config& c) { c.listeners[0].max_body_bytes = 10; });
  f.backend->auto_response = ok("never");
  test::TestClient& c = f.connect();
  c.send("POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\n01234567890");
  ClientResponse r = f.response(c);
  CHECK(r.status == 413);
  f.run_until([&] { return c.eof; });
  CHECK(f.backend->accepted() == 0);
}

TEST_CASE("client connection: a request body is forwarded, and the pipelined request after it") {
  ProxyFixture f;  // the backend answers by hand
  test::TestClient& c = f.connect();
  c.send("POST /up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello" + get("/next"));
  f.run_until([&] {
    return f.backend->accepted() == 1 && f.backend->conn(0).received.find("hello") != std::string::npos;
  });
  const std::string& got = f.backend->conn(0).received;
  CHECK(got.rfind("POST /up HTTP/1.1\r\n", 0) == 0);
  CHECK(got.find("Content-Length: 5\r\n") != std::string::npos);
  // The body ends the first request: the bytes after it are the next request, not body.
  CHECK(got.substr(got.size() - 5) == "hello");
  f.backend->conn(0).write(ok("posted"));
  CHECK(f.response(c).body == "posted");
  f.run_until([&] { return f.backend->conn(0).received.find("GET /next ") != std::string::npos; });
  f.backend->conn(0).write(ok("next"));
  CHECK(f.response(c).body == "next");
}

TEST_CASE("client connection: a chunked request body is forwarded chunked, with its end") {
  ProxyFixture f;  // the backend answers by hand
  test::TestClient& c = f.connect();
  c.send("POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
  f.run_until([&] {
    return f.backend->accepted() == 1 && f.backend->conn(0).received.find("abc") != std::string::npos;
  });
  CHECK(f.backend->conn(0).received.find("0\r\n\r\n") == std::string::npos);  // not ended yet
  c.send("2\r\nde\r\n0\r\n\r\n");
  f.run_until([&] { return f.backend->conn(0).received.find("0\r\n\r\n") != std::string::npos; });
  const std::string& got = f.backend->conn(0).received;
  std::string body = got.substr(got.find("\r\n\r\n") + 4);
  CHECK(body == "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  f.backend->conn(0).write(ok("done"));
  CHECK(f.response(c).body == "done");
}

TEST_CASE("client connection: Connection: close and HTTP/1.0 end the connection after the response") {
  ProxyFixture f;
  f.backend->responder = [](const std::string& head) { return ok(path_of(head)); };
  std::string request;
  SUBCASE("Connection: close") {
    request = "GET /bye HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n";
  }
  SUBCASE("HTTP/1.0") { request = "GET /bye HTTP/1.0\r\nHost: example.com\r\n\r\n"; }
  test::TestClient& c = f.connect();
  c.send(request);
  ClientResponse r = f.response(c);
  CHECK(r.status == 200);
  CHECK(r.body == "/bye");
  f.run_until([&] { return c.eof; });
  c.close();  // the proxy lingers until the client closes too
  f.run_until([&] { return f.listener().connections == 0; });
}

TEST_CASE("client connection: a head not received within header_timeout is answered 408") {
  // The timeout runs from the connection's start. The partial head is in the socket before
  // that, so the first turn of the loop reads it (a connection that sent nothing at all is
  // closed without a reply).
  ProxyFixture f([](Config& c) { c.listeners[0].header_timeout_ms = 100; });
  test::TestClient& c = f.connect("GET / HTTP/1.1\r\nHost: exa");
  ClientResponse r = f.response(c);
  CHECK(r.status == 408);
  f.run_until([&] { return c.eof; });
}

TEST_CASE("client connection: a keep-alive connection idle for idle_timeout is closed") {
  ProxyFixture f([](Config& c) { c.listeners[0].idle_timeout_ms = 1; });
  f.backend->auto_response = ok("x");
  test::TestClient& c = f.connect();
  c.send(get("/"));
  CHECK(f.response(c).status == 200);
  f.run_until([&] { return c.eof; });
  CHECK(c.received.empty());  // closed without a reply: nothing was asked
  f.run_until([&] { return f.listener().connections == 0; });
}

TEST_CASE("client connection: a client that does not read stops the proxy reading the upstream") {
  // Backpressure: above kHighWater queued towards the client, the proxy stops reading the
  // upstream connection, so a large response sits in the backend's own queue instead of in
  // the proxy's memory; once the client reads again, every byte arrives, in order.
  ProxyFixture f;
  f.client_rcvbuf = 64 * 1024;
  test::TestClient& c = f.connect();
  c.send(get("/big"));
  f.run_until([&] { return f.backend->accepted() == 1 && !f.backend->conn(0).received.empty(); });
  test::LoopbackBackend::Conn& be = f.backend->conn(0);
  int sndbuf = 64 * 1024;
  uv_send_buffer_size(reinterpret_cast<uv_handle_t*>(&be.tcp), &sndbuf);
  c.stop_reading();
  // Far more than every socket buffer on the way can hold, however the kernel tunes them.
  const std::size_t size = 64u * 1024 * 1024;
  std::string body(size, '\0');
  for (std::size_t i = 0; i < size; i += 4096) body[i] = static_cast<char>('a' + (i / 4096) % 26);
  be.write(ok(body));
  auto backend_queued = [&] {
    return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&be.tcp));
  };
  // The socket buffers on the way fill, and the kernel may grow them for a while (TCP
  // autotuning, slower on a busy machine): wait until the backend's queue holds still.
  std::size_t stuck = backend_queued();
  for (int i = 0; i < 100; ++i) {
    f.settle(200);
    std::size_t now = backend_queued();
    if (now == stuck && i > 0) break;
    stuck = now;
  }
  // Without backpressure the proxy would have read it all (queueing it in memory) and the
  // backend's queue would be empty.
  CHECK(stuck > size / 2);
  f.settle(200);
  CHECK(backend_queued() == stuck);  // nothing moves while the client does not read
  c.start_reading();
  ClientResponse r;
  f.run_until([&] { return test::take_response(c.received, r); }, 1000000);
  CHECK(r.status == 200);
  CHECK(r.body.size() == size);
  CHECK(r.body == body);
  CHECK(backend_queued() == 0);
}

TEST_CASE("client connection: an upstream that does not read stops the proxy reading the client") {
  // The other direction: a large request body towards a backend that reads nothing. Above
  // kHighWater queued towards the upstream the proxy stops reading the client, so the body
  // waits in the client's own queue; once the backend reads, all of it arrives.
  ProxyFixture f([](Config& cfg) { cfg.listeners[0].max_body_bytes = 128u * 1024 * 1024; });
  test::TestClient& c = f.connect();
  const std::size_t size = 64u * 1024 * 1024;
  c.send("POST /up HTTP/1.1\r\nHost: example.com\r\nContent-Length: " + std::to_string(size) +
         "\r\n\r\n");
  f.run_until([&] {
    return c.eof || (f.backend->accepted() == 1 && !f.backend->conn(0).received.empty());
  });
  REQUIRE_FALSE(c.eof);
  test::LoopbackBackend::Conn& be = f.backend->conn(0);
  be.stop_reading();
  std::string body(size, 'b');
  c.send(body);
  auto client_queued = [&] {
    return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&c.tcp));
  };
  f.settle(2000);
  std::size_t stuck = client_queued();
  CHECK(stuck > size / 2);
  f.settle(200);
  CHECK(client_queued() == stuck);
  be.start_reading();
  std::size_t head = be.received.size();
  f.run_until([&] { return be.received.size() >= size + head; }, 1000000);
  CHECK(be.received.size() == size + head);
  CHECK(client_queued() == 0);
  be.write(ok("stored"));
  CHECK(f.response(c).body == "stored");
}
