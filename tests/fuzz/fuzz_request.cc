// Bytes in on a client connection: the input is everything a client sends on one connection
// (then it half-closes). It goes through the whole request path — llhttp with Bulwark's
// callbacks, the head checks and limits, the chunked decoder, the router, the header
// rewriting — and every request Bulwark forwards reaches a backend on the same loop.
// Invariants (the smuggling ones): each forwarded request is one unambiguous HTTP/1.1 message
// (valid request line, token field names, no control bytes in values, exactly one Host, at
// most one of Content-Length / Transfer-Encoding: chunked, a valid chunked body), and what
// the client gets back starts with a well-formed response. The connection must close once the
// client has closed its end.
#include <cstdint>
#include <string>

#include "http_check.h"
#include "proxy_harness.h"

using namespace bulwark;
using namespace bulwark::fuzz;

namespace {

ProxyHarness* harness = nullptr;
std::uint64_t forwarded = 0;

void on_backend_data(Backend::Conn& c) {
  for (;;) {
    Message m = read_message(c.received, 0, /*request=*/true, /*eof=*/false);
    if (m.status == Message::Status::incomplete) return;
    FUZZ_CHECK(m.status == Message::Status::complete, "forwarded request is invalid: %s\n%s",
               m.why.c_str(), c.received.substr(0, 512).c_str());
    c.received.erase(0, m.length);
    ++forwarded;
    bool head = m.start_line.compare(0, 5, "HEAD ") == 0;
    c.write(head ? "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
                 : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  harness = new ProxyHarness();
  harness->backend->on_data = on_backend_data;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 16384) return -1;
  std::string input(reinterpret_cast<const char*>(data), size);
  std::string out = harness->serve(input, /*half_close=*/true);
  if (!out.empty()) {
    bool head = input.compare(0, 5, "HEAD ") == 0;
    Message m = read_message(out, 0, /*request=*/false, /*eof=*/false, head);
    FUZZ_CHECK(m.status != Message::Status::invalid, "response to the client is invalid: %s\n%s",
               m.why.c_str(), out.substr(0, 512).c_str());
  }
  return 0;
}
