// Shared helpers for unit tests.
#pragma once

#include <uv.h>

#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>

#include "http/headers.h"

namespace bulwark::test {

// A HeaderBlock holding the given (name, value) fields in order.
inline HeaderBlock header_block(std::initializer_list<std::pair<const char*, const char*>> fields) {
  HeaderBlock h;
  for (auto [n, v] : fields) {
    h.append_name(n, std::strlen(n));
    h.append_value(v, std::strlen(v));
  }
  return h;
}

// Writes a copy of `bytes` to `tcp` (the copy lives until the write completes).
inline void write_copy(uv_tcp_t& tcp, const std::string& bytes) {
  auto* req = new uv_write_t;
  auto* copy = new std::string(bytes);
  req->data = copy;
  uv_buf_t buf = uv_buf_init(copy->data(), static_cast<unsigned>(copy->size()));
  uv_write(req, reinterpret_cast<uv_stream_t*>(&tcp), &buf, 1, [](uv_write_t* r, int) {
    delete static_cast<std::string*>(r->data);
    delete r;
  });
}

// Closes `tcp` once (`closed` remembers).
inline void close_once(uv_tcp_t& tcp, bool& closed) {
  if (closed) return;
  closed = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp), nullptr);
}

}  // namespace bulwark::test
