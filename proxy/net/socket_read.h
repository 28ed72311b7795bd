// Reading a libuv TCP stream with recv(2). libuv reads a stream with read(2), which on a socket
// goes through the file layer first (position lock, permission and notification hooks) and
// costs measurably more per call than recv (docs/performance.md). A stream started with
// uv_read_start(stream, no_read_buffer, cb) is not read by libuv: when the socket is readable,
// libuv calls cb with UV_ENOBUFS (its documented answer to an empty buffer), and cb reads the
// socket itself with drain_socket. Writes, connects and the close stay libuv's.
#pragma once

#include <uv.h>

#include <cstddef>
#include <sys/types.h>

namespace bulwark {

// The alloc callback of such a stream: no buffer, so libuv leaves the reading to the read
// callback.
void no_read_buffer(uv_handle_t* handle, std::size_t suggested, uv_buf_t* buf);

// One recv into buf: the bytes read (> 0), 0 when there is nothing to read now, or UV_EOF or
// a libuv error code; then reading is stopped, as libuv stops it.
ssize_t read_socket(uv_stream_t* stream, char* buf, std::size_t len);

// Reads what the socket has into `buf`, handing each read to on_bytes(data, n), while
// keep_going() holds: up to 32 reads while they fill the buffer, as libuv reads (so one busy
// socket does not starve the others). Returns 0, or the UV_EOF or error that ended it. An
// owner that does not want to read when libuv reports the socket readable gets its reading
// stopped: left on, the readable socket would be reported again at every turn.
template <class OnBytes, class KeepGoing>
ssize_t drain_socket(uv_stream_t* stream, char* buf, std::size_t len, OnBytes&& on_bytes,
                     KeepGoing&& keep_going) {
  if (!keep_going()) {
    uv_read_stop(stream);
    return 0;
  }
  for (int i = 0; i < 32; ++i) {
    ssize_t n = read_socket(stream, buf, len);
    if (n <= 0) return n;
    on_bytes(buf, static_cast<std::size_t>(n));
    if (static_cast<std::size_t>(n) < len || !keep_going()) break;
  }
  return 0;
}

}  // namespace bulwark
