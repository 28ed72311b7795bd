// Bytes in on an HTTP/2 upstream connection (`protocol: h2`): the input (after one control
// byte) is everything the upstream sends once Bulwark's connection preface, SETTINGS and the
// first request's HEADERS arrived: its SETTINGS, the response's HEADERS, DATA, trailers,
// resets, GOAWAY, PING, WINDOW_UPDATE, garbage. It goes through nghttp2's client session,
// H2UpstreamConnection and H2UpstreamStream (the response read into HTTP/1.1 terms, gRPC
// trailers-only split, flow control, refused streams sent again) and the re-framing towards
// an HTTP/1.1 client. Byte 0 picks the client's request (GET, HEAD, POST with a body, chunked
// POST with a trailer, a gRPC call). Invariants: the client receives only well-formed
// responses: zero or more interim 1xx heads, then one final response with a single framing,
// and nothing after it; every connection closes once the client and the upstream hang up.
#include <cstdint>
#include <cstring>
#include <string>

#include "http_check.h"
#include "proxy_harness.h"

using namespace bulwark;
using namespace bulwark::fuzz;

namespace {

ProxyHarness* harness = nullptr;
std::string upstream_bytes;
bool answered = false;

const char* const kRequests[] = {
    "GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "HEAD /a HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "POST /a HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello",
    "POST /a HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
    "x-sum: 1\r\n\r\n",
    "POST /svc/M HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/grpc\r\n"
    "TE: trailers\r\nContent-Length: 5\r\n\r\n\0\0\0\0\0",
};

// The client preface (24 bytes) and a frame header at least: Bulwark's first write carries
// its SETTINGS and the first request's HEADERS with it.
void on_backend_data(Backend::Conn& c) {
  if (answered || c.received.size() < 24 + 9) return;
  answered = true;
  c.write(upstream_bytes);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  harness = new ProxyHarness([](Config& c) {
    c.upstreams[0].h2 = true;
    c.upstreams[0].h2_initial_window = 4096;  // small, so flow control is reachable
  });
  harness->backend->on_data = on_backend_data;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1 || size > 20480) return -1;
  std::size_t which = data[0] % (sizeof kRequests / sizeof kRequests[0]);
  upstream_bytes.assign(reinterpret_cast<const char*>(data) + 1, size - 1);
  answered = false;
  std::string request(kRequests[which], which == 4 ? std::strlen(kRequests[which]) + 5
                                                   : std::strlen(kRequests[which]));
  bool head = which == 1;
  std::string out = harness->serve(request, /*half_close=*/false);
  check_client_responses(out, head, /*allow_upgrade=*/false);
  return 0;
}
