// Bytes in on an upstream connection: the input (after two control bytes) is everything the
// upstream sends in answer to one request, through the upstream connection's head scanner,
// llhttp, the chunked decoder and the response re-framing towards the client. Byte 0 picks
// the client's request (GET, HEAD, POST with a body, chunked POST, an upgrade, HTTP/1.0),
// byte 1 whether the upstream closes after its bytes. Invariants: the client receives only
// well-formed responses — zero or more interim 1xx heads, then one final response with a
// single framing (a valid chunked body, or exactly Content-Length bytes, or close-delimited),
// and nothing after it except after a 101; never a framing header on a 1xx or 204.
#include <cstdint>
#include <string>

#include "http_check.h"
#include "proxy_harness.h"

using namespace bulwark;
using namespace bulwark::fuzz;

namespace {

ProxyHarness* harness = nullptr;
std::string upstream_bytes;
bool upstream_closes = false;
bool answered = false;

const char* const kRequests[] = {
    "GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "HEAD /a HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "POST /a HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello",
    "POST /a HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    "GET /a HTTP/1.0\r\nHost: example.com\r\n\r\n",
    "GET /a HTTP/1.1\r\nHost: example.com\r\nTE: trailers\r\n\r\n",
    "GET /a HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
};

void on_backend_data(Backend::Conn& c) {
  if (answered || c.received.find("\r\n\r\n") == std::string::npos) return;
  answered = true;
  c.write(upstream_bytes);
  if (upstream_closes) c.close();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  harness = new ProxyHarness();
  harness->backend->on_data = on_backend_data;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2 || size > 16384) return -1;
  std::size_t which = data[0] % (sizeof kRequests / sizeof kRequests[0]);
  upstream_closes = (data[1] & 1) != 0;
  upstream_bytes.assign(reinterpret_cast<const char*>(data) + 2, size - 2);
  answered = false;
  std::string request = kRequests[which];
  bool head = which == 1;
  std::string out = harness->serve(request, /*half_close=*/false);
  // What the client received: interim heads, one final response, nothing after it.
  check_client_responses(out, head, /*allow_upgrade=*/true);
  return 0;
}
