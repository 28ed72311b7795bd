#include "http/headers.h"

#include <doctest/doctest.h>

#include <cstring>

#include "http/local_reply.h"
#include "http/request_id.h"
#include "test_helpers.h"

using namespace bulwark;
using test::header_block;

TEST_CASE("HeaderBlock joins names and values delivered in pieces") {
  HeaderBlock h;
  h.append_name("Con", 3);
  h.append_name("tent-Type", 9);
  h.append_value("text/", 5);
  h.append_value("plain", 5);
  h.append_name("X-A", 3);
  h.append_value("", 0);
  REQUIRE(h.size() == 2);
  CHECK(h.name(0) == "Content-Type");
  CHECK(h.value(0) == "text/plain");
  CHECK(h.name(1) == "X-A");
  CHECK(h.value(1) == "");
  CHECK(h.get("content-type") == "text/plain");
  h.clear();
  CHECK(h.size() == 0);
}

TEST_CASE("inspect_request finds what the proxy needs") {
  auto h = header_block({{"Host", "a.example:8080"},
                         {"Connection", "keep-alive, Upgrade"},
                         {"Upgrade", "websocket"},
                         {"Expect", "100-continue"},
                         {"X-Forwarded-For", "1.1.1.1"},
                         {"X-Request-Id", "r1"}});
  RequestInfo i = inspect_request(h);
  CHECK(i.host == "a.example:8080");
  CHECK(i.host_count == 1);
  CHECK(i.connection_keep_alive);
  CHECK(i.connection_upgrade);
  CHECK_FALSE(i.connection_close);
  CHECK(i.upgrade == "websocket");
  CHECK(i.expect_continue);
  CHECK(i.request_id == "r1");
  CHECK(i.content_length_count == 0);
  CHECK(i.transfer_encoding_count == 0);
}

TEST_CASE("HeaderBlock drops trailing whitespace when a value ends") {
  HeaderBlock h;
  h.append_name("A", 1);
  h.append_value("x \t ", 4);
  h.end_value();
  h.append_name("B", 1);
  h.end_value();  // an empty value
  h.append_name("C", 1);
  h.append_value("y", 1);
  h.end_value();
  REQUIRE(h.size() == 3);
  CHECK(h.value(0) == "x");
  CHECK(h.name(1) == "B");
  CHECK(h.value(1) == "");
  CHECK(h.name(2) == "C");
  CHECK(h.value(2) == "y");
}

TEST_CASE("transfer codings: only a lone, final chunked is accepted") {
  auto classify = [](std::initializer_list<std::pair<const char*, const char*>> fields) {
    return transfer_coding(test::header_block(fields));
  };
  CHECK(classify({{"Host", "a"}}) == TransferCoding::absent);
  CHECK(classify({{"Transfer-Encoding", "chunked"}}) == TransferCoding::chunked);
  CHECK(classify({{"Transfer-Encoding", "Chunked"}}) == TransferCoding::chunked);
  // Empty list elements are refused (RFC 9110 5.6.1 would skip them; HAProxy and NGINX refuse
  // them, and a parser in front of Bulwark may disagree about the value).
  CHECK(classify({{"Transfer-Encoding", " , chunked"}}) == TransferCoding::invalid);
  CHECK(classify({{"Transfer-Encoding", "gzip,,chunked"}}) == TransferCoding::invalid);
  CHECK(classify({{"Transfer-Encoding", ""}}) == TransferCoding::invalid);
  CHECK(classify({{"Transfer-Encoding", "gzip"}}) == TransferCoding::invalid);
  CHECK(classify({{"Transfer-Encoding", "chunked, gzip"}}) == TransferCoding::invalid);
  CHECK(classify({{"Transfer-Encoding", "chunked, chunked"}}) == TransferCoding::invalid);
  CHECK(classify({{"Transfer-Encoding", "chunked"}, {"Transfer-Encoding", "chunked"}}) ==
        TransferCoding::invalid);
  CHECK(classify({{"Transfer-Encoding", "chunked;x=1"}}) == TransferCoding::invalid);
  CHECK(classify({{"Transfer-Encoding", "chu nked"}}) == TransferCoding::invalid);
  CHECK(classify({{"Transfer-Encoding", "gzip, chunked"}}) == TransferCoding::unsupported);
  CHECK(classify({{"Transfer-Encoding", "identity, chunked"}}) == TransferCoding::unsupported);
  CHECK(classify({{"Transfer-Encoding", "gzip"}, {"Transfer-Encoding", "chunked"}}) ==
        TransferCoding::unsupported);
  std::string_view coding;
  auto custom = test::header_block({{"Transfer-Encoding", "x-custom;q=1, chunked"}});
  transfer_coding(custom, &coding);
  CHECK(coding == "x-custom");
}

TEST_CASE("upstream request head drops hop-by-hop headers and adds forwarding ones") {
  auto h = header_block({{"Host", "a"},
                         {"Connection", "close, X-Secret"},
                         {"X-Secret", "s"},
                         {"Keep-Alive", "5"},
                         {"TE", "trailers"},
                         {"Transfer-Encoding", "chunked"},
                         {"Proxy-Connection", "x"},
                         {"Trailer", "x"},
                         {"Upgrade", "h2c"},
                         {"X-Forwarded-For", "9.9.9.9"},
                         {"X-Forwarded-Proto", "https"},
                         {"Expect", "100-continue"},
                         {"Accept", "*/*"}});
  UpstreamRequestHead head;
  head.method = "POST";
  head.target = "/p?q=1";
  head.client_ip = "10.0.0.1";
  head.request_id = "id-1";
  head.host = "a";
  head.framing = BodyFraming::chunked;
  std::string out;
  write_upstream_request_head(out, h, head);
  CHECK(out ==
        "POST /p?q=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n"
        "X-Forwarded-For: 9.9.9.9, 10.0.0.1\r\nX-Forwarded-Proto: http\r\n"
        "X-Request-Id: id-1\r\nTransfer-Encoding: chunked\r\n\r\n");
}

TEST_CASE("upstream head for an upgrade keeps Connection: upgrade and Upgrade") {
  auto h = header_block({{"Host", "a"}, {"Connection", "Upgrade"}, {"Upgrade", "websocket"}});
  UpstreamRequestHead head;
  head.method = "GET";
  head.target = "/ws";
  head.client_ip = "1.2.3.4";
  head.request_id = "x";
  head.upgrade = "websocket";
  head.host = "a";
  std::string out;
  write_upstream_request_head(out, h, head);
  CHECK(out.find("Connection: upgrade\r\nUpgrade: websocket\r\n\r\n") != std::string::npos);
  CHECK(out.find("X-Forwarded-For: 1.2.3.4\r\n") != std::string::npos);
}

TEST_CASE("upstream head: one Host, never stripped by Connection; X-Forwarded-For lines joined") {
  auto h = header_block({{"Host", "client.example"},
                         {"Connection", "Host, Content-Length, X-Forwarded-For"},
                         {"X-Forwarded-For", "1.1.1.1"},
                         {"Content-Length", "0"},
                         {"X-Forwarded-For", " 2.2.2.2, 3.3.3.3 "},
                         {"X-Forwarded-For", ""}});
  UpstreamRequestHead head;
  head.method = "POST";
  head.target = "/";
  head.host = "target.example";
  head.client_ip = "10.0.0.1";
  head.request_id = "r";
  head.framing = BodyFraming::content_length;
  head.content_length = 0;
  std::string out;
  write_upstream_request_head(out, h, head);
  CHECK(out ==
        "POST / HTTP/1.1\r\nHost: target.example\r\n"
        "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1\r\nX-Forwarded-Proto: http\r\n"
        "X-Request-Id: r\r\nContent-Length: 0\r\n\r\n");
}

TEST_CASE("downstream response head re-frames and announces connection state") {
  auto h = header_block({{"Content-Type", "text/plain"},
                         {"Content-Length", "5"},
                         {"Connection", "keep-alive"},
                         {"Transfer-Encoding", "chunked"},
                         {"Keep-Alive", "timeout=5"}});
  DownstreamResponseHead head;
  head.status = 200;
  head.reason = "OK";
  head.framing = BodyFraming::content_length;
  head.content_length = 5;
  std::string out;
  write_downstream_response_head(out, h, head);
  CHECK(out == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n");
  head.framing = BodyFraming::chunked;
  head.close = true;
  head.reason = "";
  head.status = 503;
  write_downstream_response_head(out, h, head);
  CHECK(out ==
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
  head.minor_version = 0;
  head.close = false;
  head.keep_alive_1_0 = true;
  head.framing = BodyFraming::content_length;
  write_downstream_response_head(out, h, head);
  CHECK(out.rfind("HTTP/1.0 503", 0) == 0);
  CHECK(out.find("Connection: keep-alive\r\n") != std::string::npos);
}

TEST_CASE("request target forms") {
  CHECK(origin_form("/a?b") == "/a?b");
  CHECK(origin_form("http://evil.example/a?b") == "/a?b");
  CHECK(origin_form("http://evil.example") == "/");
  CHECK(origin_form("*") == "*");
  CHECK(origin_form("evil.example:443") == "");
  CHECK(origin_form("/a?b#frag") == "/a?b");
  CHECK(origin_form("http://h.example/p#f") == "/p");
  CHECK(origin_form("http://h.example#f") == "/");
  CHECK(target_authority("http://u:p@h.example:8080/p") == "h.example:8080");
  CHECK(target_authority("http://h.example#f") == "h.example");
  CHECK(target_authority("/p") == "");
  CHECK(target_authority("*") == "");
  CHECK(target_path("/a/b?c=/d") == "/a/b");
  CHECK(host_without_port("Example.com:80") == "Example.com");
  CHECK(host_without_port("[::1]:80") == "[::1]");
  CHECK(host_without_port("example.com") == "example.com");
}

TEST_CASE("iequals and hop-by-hop classification") {
  CHECK(iequals("Content-Length", "content-length"));
  CHECK_FALSE(iequals("Content-Length", "content-lengtx"));
  CHECK_FALSE(iequals("a", "ab"));
  for (const char* n : {"Connection", "keep-alive", "Proxy-Connection", "TE", "Trailer",
                        "Transfer-Encoding", "Upgrade", "Content-Length"})
    CHECK(is_hop_by_hop(n));
  for (const char* n : {"Host", "Accept", "X-Forwarded-For", "Trailers"})
    CHECK_FALSE(is_hop_by_hop(n));
}

TEST_CASE("iequals agrees with a byte-at-a-time ASCII comparison") {
  // Every byte value against every other at each position of every length up to 24, and
  // random pairs: iequals works eight bytes at a time.
  auto reference = [](std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      auto lower = [](unsigned char c) { return c >= 'A' && c <= 'Z' ? c | 0x20 : c; };
      if (lower(static_cast<unsigned char>(a[i])) != lower(static_cast<unsigned char>(b[i])))
        return false;
    }
    return true;
  };
  for (std::size_t len = 1; len <= 24; ++len)
    for (std::size_t at = 0; at < len; ++at)
      for (int x = 0; x < 256; ++x)
        for (int y : {x, x ^ 0x20, x ^ 0x80, int{'a'}, int{'A'}, int{'z'}, int{'Z'}, int{'@'},
                      int{'['}, int{'`'}, int{'{'}, 0}) {
          std::string a(len, 'k'), b(len, 'K');
          a[at] = static_cast<char>(x);
          b[at] = static_cast<char>(y);
          REQUIRE(iequals(a, b) == reference(a, b));
        }
  std::uint64_t seed = 42;
  auto next = [&seed] {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<unsigned>(seed >> 33);
  };
  for (int round = 0; round < 20000; ++round) {
    std::size_t len = next() % 40;
    std::string a(len, ' '), b(len, ' ');
    for (std::size_t i = 0; i < len; ++i) {
      a[i] = static_cast<char>("aAzZ-09@[`{\x80\xc1"[next() % 14]);
      b[i] = next() % 4 ? static_cast<char>(a[i] ^ (next() % 2 ? 0x20 : 0)) : static_cast<char>(next());
    }
    REQUIRE(iequals(a, b) == reference(a, b));
  }
  CHECK(iequals("Transfer-Encoding", "transfer-encoding"));
  CHECK_FALSE(iequals("Transfer-Encoding", "transfer-encodinG2"));
  CHECK_FALSE(iequals("transfer-encodinh", "transfer-encoding"));
  CHECK_FALSE(iequals("x-forwarded-for\xc1", "x-forwarded-for\xe1"));
}

TEST_CASE("connection_lists_fields: only tokens other than close, keep-alive and upgrade") {
  auto block = [](std::initializer_list<std::pair<std::string_view, std::string_view>> fields) {
    HeaderBlock h;
    for (auto [n, v] : fields) {
      h.append_name(n.data(), n.size());
      h.append_value(v.data(), v.size());
      h.end_value();
    }
    return h;
  };
  CHECK_FALSE(connection_lists_fields(block({{"Server", "x"}})));
  CHECK_FALSE(connection_lists_fields(block({{"Connection", "keep-alive"}})));
  CHECK_FALSE(connection_lists_fields(block({{"connection", "Close"}})));
  CHECK_FALSE(connection_lists_fields(block({{"Connection", "upgrade, Keep-Alive"}})));
  CHECK(connection_lists_fields(block({{"Connection", "keep-alive, X-Hop"}})));
  CHECK(connection_lists_fields(block({{"Connection", "close"}, {"CONNECTION", "x-hop"}})));
  HeaderBlock h = block({{"Connection", "close, X-Hop"}, {"x-hop", "1"}, {"X-End", "2"}});
  CHECK(listed_in_connection(h, "X-HOP"));
  CHECK_FALSE(listed_in_connection(h, "x-end"));
}

TEST_CASE("local replies carry the reason header and a problem+json body") {
  std::string out;
  LocalReply r;
  r.reason = Reason::rate_limited;
  r.detail = "slow \"down\"";
  r.request_id = "rid";
  r.extra = "Retry-After: 1\r\n";
  CHECK(write_local_reply(out, r) == 429);
  CHECK(out.rfind("HTTP/1.1 429 Too Many Requests\r\n", 0) == 0);
  CHECK(out.find("Content-Type: application/problem+json\r\n") != std::string::npos);
  CHECK(out.find("x-bulwark-reason: rate-limited\r\n") != std::string::npos);
  CHECK(out.find("Retry-After: 1\r\n") != std::string::npos);
  auto body = out.substr(out.find("\r\n\r\n") + 4);
  CHECK(body ==
        "{\"type\":\"urn:bulwark:problem:rate-limited\",\"title\":\"Rate limited\","
        "\"status\":429,\"detail\":\"slow \\\"down\\\"\",\"request_id\":\"rid\"}\n");
  CHECK(out.find("Content-Length: " + std::to_string(body.size()) + "\r\n") != std::string::npos);
}

TEST_CASE("every reason has the status the reference gives it") {
  struct {
    Reason r;
    const char* name;
    int status;
  } table[] = {{Reason::rate_limited, "rate-limited", 429},
               {Reason::overloaded, "overloaded", 503},
               {Reason::circuit_open, "circuit-open", 503},
               {Reason::no_healthy_upstream, "no-healthy-upstream", 503},
               {Reason::pending_overflow, "pending-overflow", 503},
               {Reason::upstream_connect_failure, "upstream-connect-failure", 502},
               {Reason::upstream_reset, "upstream-reset", 502},
               {Reason::upstream_timeout, "upstream-timeout", 504},
               {Reason::no_route, "no-route", 404},
               {Reason::bad_request, "bad-request", 400},
               {Reason::request_timeout, "request-timeout", 408},
               {Reason::body_too_large, "body-too-large", 413},
               {Reason::header_too_large, "header-too-large", 431},
               {Reason::fault_injected, "fault-injected", 503}};
  for (auto& row : table) {
    CHECK(reason_name(row.r) == row.name);
    CHECK(reason_status(row.r) == row.status);
  }
}

TEST_CASE("request ids are UUID-shaped and differ") {
  RequestIdGenerator g(42);
  char a[36], b[36];
  g.next(a);
  g.next(b);
  std::string sa(a, 36), sb(b, 36);
  CHECK(sa != sb);
  CHECK(sa[8] == '-');
  CHECK(sa[14] == '4');
  CHECK(std::string("89ab").find(sa[19]) != std::string::npos);
}

TEST_CASE("upstream head: a gRPC deadline replaces the client's grpc-timeout") {
  auto h = header_block({{"Host", "a"}, {"grpc-timeout", "10S"}, {"content-type", "application/grpc"}});
  UpstreamRequestHead head;
  head.method = "POST";
  head.target = "/svc/M";
  head.client_ip = "1.2.3.4";
  head.request_id = "x";
  head.host = "a";
  std::string out;
  write_upstream_request_head(out, h, head);
  CHECK(out.find("grpc-timeout: 10S\r\n") != std::string::npos);  // kept without a deadline
  head.grpc_timeout_ms = 250;
  write_upstream_request_head(out, h, head);
  CHECK(out.find("10S") == std::string::npos);
  CHECK(out.find("grpc-timeout: 250m\r\n") != std::string::npos);
  head.grpc_timeout_ms = 200'000'000;  // past 8 digits of milliseconds: seconds
  write_upstream_request_head(out, h, head);
  CHECK(out.find("grpc-timeout: 200000S\r\n") != std::string::npos);
}

TEST_CASE("inspect_request finds a gRPC request and its deadline in the same pass") {
  auto h = header_block({{"Host", "a"}, {"Content-Type", "application/grpc+proto"},
                         {"grpc-timeout", "300m"}, {"GRPC-Timeout", "9S"}});
  RequestInfo info = inspect_request(h);
  CHECK(info.grpc);
  CHECK(info.grpc_timeout == "300m");  // the first one
  RequestInfo plain = inspect_request(header_block({{"Host", "a"}, {"Content-Type", "application/json"}}));
  CHECK_FALSE(plain.grpc);
  CHECK(plain.grpc_timeout.empty());
}
