// Bytes in on an HTTP/2 client connection: the input is everything a client sends on one
// connection after the 24-byte preface (prepended here, so the fuzzer explores frames rather
// than the magic), on a listener with `protocols: [h2c]`. It goes through nghttp2's server
// session, H2Session and H2Stream (the header list as a request head, DATA as the body,
// trailers, resets, flow control, the flood and limit checks), the router and the upstream
// pool, and every request Bulwark forwards reaches a backend on the same loop, which answers
// (by the length of the request target: Content-Length, chunked with a trailer, 204, or
// close-delimited). The limits are small so that they are reachable within an input:
// max_header_bytes 4 KiB, 16 header lines, max_body_bytes 4 KiB, 8 concurrent streams, a
// stream window of 8 KiB (once the client acknowledged the SETTINGS).
// Invariants:
//  - each forwarded request is one valid HTTP/1.1 message (http_check.h: request line, token
//    field names, exactly one Host, one framing, a valid chunked body), with no pseudo-header
//    and no connection-specific field in its head, no body above max_body_bytes, and chunked
//    trailers without the fields only a head may carry (what ClientConnection::add_trailer
//    keeps out for HTTP/1 clients: hop-by-hop and framing fields, Host, the forwarding ones);
//  - what the client receives is a sequence of HTTP/2 frames starting with SETTINGS, with
//    header blocks that decode (HPACK) into responses: :status first and only in a head,
//    lowercase names, no connection-specific field, no server push;
//  - once the client half-closes, the connection closes; afterwards no Exchange is left in
//    use (the worker's ExchangePool) and no upstream connection is open.
// ASan and UBSan (the fuzz build) catch the rest.
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "http_check.h"
#include "proxy_harness.h"

using namespace bulwark;
using namespace bulwark::fuzz;

namespace {

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr std::uint64_t kMaxBodyBytes = 4096;

ProxyHarness* harness = nullptr;
std::uint64_t forwarded = 0;

// Connection-specific fields (RFC 9113 8.2.2), never forwarded from an HTTP/2 request and
// never in an HTTP/2 response.
bool connection_specific(std::string_view lower_name) {
  return lower_name == "connection" || lower_name == "keep-alive" ||
         lower_name == "proxy-connection" || lower_name == "upgrade" || lower_name == "te" ||
         lower_name == "trailer" || lower_name == "http2-settings";
}

// The head of a forwarded request (read_message checked its syntax).
void check_request_head(std::string_view msg) {
  std::string_view head = msg.substr(0, msg.find("\r\n\r\n") + 2);
  std::size_t at = head.find("\r\n") + 2;
  while (at < head.size()) {
    std::size_t e = head.find("\r\n", at);
    std::string_view field = head.substr(at, e - at);
    at = e + 2;
    std::string name = lower(field.substr(0, field.find(':')));
    FUZZ_CHECK(!name.empty() && name[0] != ':', "pseudo-header forwarded:\n%.512s",
               std::string(msg).c_str());
    FUZZ_CHECK(!connection_specific(name), "connection-specific field '%s' forwarded:\n%.512s",
               name.c_str(), std::string(msg).c_str());
  }
}

// The trailer section of a forwarded chunked request: the lines after the last chunk.
void check_request_trailers(std::string_view msg) {
  std::size_t body = msg.find("\r\n\r\n") + 4;
  std::size_t p = body;
  for (;;) {  // chunk by chunk (the framing is valid: read_message decoded it)
    std::size_t eol = msg.find("\r\n", p);
    std::string_view line = msg.substr(p, eol - p);
    std::uint64_t size = 0;
    for (char c : line) {
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) break;  // an extension
      size = size * 16 + static_cast<std::uint64_t>(d);
    }
    p = eol + 2;
    if (size == 0) break;
    p += size + 2;
  }
  while (p < msg.size()) {
    std::size_t eol = msg.find("\r\n", p);
    std::string_view field = msg.substr(p, eol - p);
    p = eol + 2;
    if (field.empty()) break;
    std::string name = lower(field.substr(0, field.find(':')));
    FUZZ_CHECK(!name.empty() && name[0] != ':', "pseudo-header forwarded as a trailer:\n%.512s",
               std::string(msg).c_str());
    FUZZ_CHECK(!is_hop_by_hop(name) && name != "host" && name != "x-forwarded-for" &&
                   name != "x-forwarded-proto" && name != "x-request-id",
               "trailer '%s' forwarded (a head-only field):\n%.512s", name.c_str(),
               std::string(msg).c_str());
  }
}

void on_backend_data(Backend::Conn& c) {
  for (;;) {
    Message m = read_message(c.received, 0, /*request=*/true, /*eof=*/false);
    if (m.status == Message::Status::incomplete) return;
    FUZZ_CHECK(m.status == Message::Status::complete, "forwarded request is invalid: %s\n%s",
               m.why.c_str(), c.received.substr(0, 512).c_str());
    std::string_view msg(c.received.data(), m.length);
    check_request_head(msg);
    if (m.chunked) check_request_trailers(msg);
    FUZZ_CHECK(m.body.size() <= kMaxBodyBytes, "a %zu-byte body forwarded (max_body_bytes %llu)",
               m.body.size(), static_cast<unsigned long long>(kMaxBodyBytes));
    ++forwarded;
    bool head = m.start_line.compare(0, 5, "HEAD ") == 0;
    std::size_t target = m.start_line.find(' ');
    std::size_t target_len = m.start_line.rfind(' ') - target - 1;
    c.received.erase(0, m.length);
    if (head) {
      c.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
      continue;
    }
    switch (target_len % 4) {
      case 0:
        c.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: a\r\n\r\nok");
        break;
      case 1:  // the trailers path
        c.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n"
                "2\r\nok\r\n0\r\nx-checksum: 1\r\n\r\n");
        break;
      case 2:
        c.write("HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n");
        break;
      default:  // close-delimited
        c.write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbye");
        c.close();
        return;
    }
  }
}

// What the client received: HTTP/2 frames (the last one may be cut off by the close).
void check_client_output(const std::string& out) {
  if (out.empty()) return;
  bool debug = std::getenv("BULWARK_FUZZ_DEBUG") != nullptr;
  nghttp2_hd_inflater* inflater = nullptr;
  FUZZ_CHECK(nghttp2_hd_inflate_new(&inflater) == 0, "nghttp2_hd_inflate_new");
  std::unordered_map<std::int32_t, bool> final_head;  // stream -> its final head was seen
  std::string block;
  std::int32_t block_stream = 0;
  bool in_block = false;
  auto decode = [&] {
    const auto* in = reinterpret_cast<const std::uint8_t*>(block.data());
    std::size_t left = block.size();
    bool trailers = final_head[block_stream];
    bool first = true, regular_seen = false, has_status = false, interim = false;
    for (;;) {
      nghttp2_nv nv;
      int flags = 0;
      ssize_t n = nghttp2_hd_inflate_hd2(inflater, &nv, &flags, in, left, 1);
      FUZZ_CHECK(n >= 0, "the server's header block does not decode (HPACK error %zd)", n);
      in += n;
      left -= static_cast<std::size_t>(n);
      if (flags & NGHTTP2_HD_INFLATE_EMIT) {
        std::string_view name(reinterpret_cast<const char*>(nv.name), nv.namelen);
        std::string_view value(reinterpret_cast<const char*>(nv.value), nv.valuelen);
        if (debug)
          std::fprintf(stderr, "  stream %d: %.*s: %.*s\n", block_stream,
                       static_cast<int>(name.size()), name.data(), static_cast<int>(value.size()),
                       value.data());
        FUZZ_CHECK(lower(name) == name, "uppercase in a response field name '%.*s'",
                   static_cast<int>(name.size()), name.data());
        FUZZ_CHECK(!connection_specific(name) && name != "transfer-encoding",
                   "connection-specific field '%.*s' in a response", static_cast<int>(name.size()),
                   name.data());
        FUZZ_CHECK(field_value_ok(value), "control byte in response field '%.*s'",
                   static_cast<int>(name.size()), name.data());
        if (!name.empty() && name[0] == ':') {
          FUZZ_CHECK(!trailers && !regular_seen && name == ":status" && !has_status,
                     "pseudo-header '%.*s' out of place in a response block",
                     static_cast<int>(name.size()), name.data());
          FUZZ_CHECK(value.size() == 3 && value[0] >= '1' && value[0] <= '5',
                     "bad :status '%.*s'", static_cast<int>(value.size()), value.data());
          has_status = true;
          interim = value[0] == '1';
        } else {
          FUZZ_CHECK(!first || trailers, "a response head without :status first");
          regular_seen = true;
        }
        first = false;
      }
      if (flags & NGHTTP2_HD_INFLATE_FINAL) {
        nghttp2_hd_inflate_end_headers(inflater);
        break;
      }
      if (n == 0 && left == 0) break;
    }
    FUZZ_CHECK(trailers || has_status, "a response head without :status");
    if (!trailers && !interim) final_head[block_stream] = true;
    block.clear();
    in_block = false;
  };
  std::size_t pos = 0;
  bool first = true;
  while (pos + 9 <= out.size()) {
    const auto* h = reinterpret_cast<const std::uint8_t*>(out.data() + pos);
    std::size_t len = (std::size_t{h[0]} << 16) | (std::size_t{h[1]} << 8) | h[2];
    std::uint8_t type = h[3], flags = h[4];
    std::int32_t sid = static_cast<std::int32_t>(((std::uint32_t{h[5]} & 0x7f) << 24) |
                                                 (std::uint32_t{h[6]} << 16) |
                                                 (std::uint32_t{h[7]} << 8) | h[8]);
    if (pos + 9 + len > out.size()) break;  // cut off
    std::string_view payload(out.data() + pos + 9, len);
    pos += 9 + len;
    if (first) {
      FUZZ_CHECK(type == NGHTTP2_SETTINGS && !(flags & NGHTTP2_FLAG_ACK) && sid == 0,
                 "the server's first frame is not SETTINGS (type %d)", type);
      first = false;
    }
    if (in_block)
      FUZZ_CHECK(type == NGHTTP2_CONTINUATION && sid == block_stream,
                 "frame type %d inside a header block", type);
    switch (type) {
      case NGHTTP2_HEADERS: {
        FUZZ_CHECK(sid != 0 && (sid & 1), "HEADERS on stream %d", sid);
        std::size_t skip = 0, pad = 0;
        if (flags & NGHTTP2_FLAG_PADDED) {
          FUZZ_CHECK(!payload.empty(), "padded HEADERS without a pad length");
          pad = static_cast<std::uint8_t>(payload[0]);
          skip = 1;
        }
        if (flags & NGHTTP2_FLAG_PRIORITY) skip += 5;
        FUZZ_CHECK(skip + pad <= payload.size(), "HEADERS padding past its end");
        block.assign(payload.substr(skip, payload.size() - skip - pad));
        block_stream = sid;
        in_block = true;
        if (flags & NGHTTP2_FLAG_END_HEADERS) decode();
        break;
      }
      case NGHTTP2_CONTINUATION:
        FUZZ_CHECK(in_block, "CONTINUATION outside a header block");
        block.append(payload);
        if (flags & NGHTTP2_FLAG_END_HEADERS) decode();
        break;
      case NGHTTP2_PUSH_PROMISE:
        FUZZ_CHECK(false, "the server pushed");
        break;
      case NGHTTP2_DATA:
        FUZZ_CHECK(sid != 0 && (sid & 1), "DATA on stream %d", sid);
        FUZZ_CHECK(final_head[sid], "DATA on stream %d before its response head", sid);
        break;
      default:
        break;
    }
  }
  nghttp2_hd_inflate_del(inflater);
}

// As ProxyHarness::serve, but the client half-closes only once the proxy has gone quiet (an
// HTTP/2 client that closes its end is done with every stream: sent at once, the input
// would mostly be cancelled before reaching the upstream), and the connection must then
// close by itself.
std::string serve(const std::string& input) {
  ProxyHarness& h = *harness;
  int sv[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
             "socketpair");
  int size = 1 << 20;
  ::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  std::size_t sent = 0;
  std::string received;
  auto pump = [&] {
    while (sent < input.size()) {
      ssize_t n = ::send(sv[0], input.data() + sent, input.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<std::size_t>(n);
    }
    char buf[16384];
    for (;;) {
      ssize_t n = ::recv(sv[0], buf, sizeof buf, 0);
      if (n <= 0) break;
      received.append(buf, static_cast<std::size_t>(n));
    }
  };
  // Turns until the connection closes or nothing moves for 16 turns.
  auto run = [&](std::uint64_t before) {
    int quiet = 0;
    for (int i = 0; i < 400 && quiet < 16 && h.listener().connections > before; ++i) {
      std::size_t got = received.size(), was_sent = sent;
      std::uint64_t backend_bytes = h.backend->bytes_read;
      h.turn();
      pump();
      bool moved = received.size() != got || sent != was_sent || h.backend->bytes_read != backend_bytes;
      quiet = moved ? 0 : quiet + 1;
    }
  };
  pump();
  std::uint64_t before = h.listener().connections;
  auto* d = new ClientConnection(h.listener());
  h.worker->add_downstream(d);
  if (d->open(sv[1])) {
    run(before);
    // The client half-closes: the connection must close (what is still queued towards the
    // client may go out first).
    ::shutdown(sv[0], SHUT_WR);
    run(before);
    for (int i = 0; i < 200 && h.listener().connections > before; ++i) {
      h.turn();
      pump();
    }
    FUZZ_CHECK(h.listener().connections == before,
               "client connection still open after the client half-closed (sent %zu of %zu "
               "bytes, received %zu)", sent, input.size(), received.size());
  }
  if (std::getenv("BULWARK_FUZZ_DEBUG"))
    std::fprintf(stderr, "served: %zu bytes sent, %zu received, backend read %llu, forwarded %llu\n",
                 sent, received.size(), static_cast<unsigned long long>(h.backend->bytes_read),
                 static_cast<unsigned long long>(forwarded));
  ::close(sv[0]);
  // Upstream connections close too, so the next input starts from an empty pool.
  Upstream::Pick pick = h.worker->upstream(0).pick(uv_now(h.loop));
  if (pick.endpoint) pick.endpoint->pool->close_idle();
  h.backend->close_all();
  for (int i = 0; i < 200 && !h.backend->all_closed(); ++i) h.turn();
  FUZZ_CHECK(h.backend->all_closed(), "backend connections still open");
  for (int i = 0; i < 4; ++i) h.turn();
  h.backend->forget_closed();
  FUZZ_CHECK(h.worker->exchanges().in_use() == 0,
             "%zu exchanges still in use after every connection closed",
             h.worker->exchanges().in_use());
  return received;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  harness = new ProxyHarness([](Config& c) {
    ListenerConfig& l = c.listeners[0];
    l.http1 = false;
    l.h2c = true;  // prior knowledge: HTTP/2 from the first byte
    l.max_header_bytes = 4096;
    l.max_headers = 16;
    l.max_body_bytes = kMaxBodyBytes;
    l.h2_max_concurrent_streams = 8;
    l.h2_initial_window = 8192;
    l.h2_max_frame_size = 16384;
  });
  harness->backend->on_data = on_backend_data;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 32768) return -1;
  std::string input(kPreface);
  input.append(reinterpret_cast<const char*>(data), size);
  check_client_output(serve(input));
  return 0;
}
