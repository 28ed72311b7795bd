#include "net/socket_read.h"

#include <sys/socket.h>

#include <cerrno>

namespace bulwark {

void no_read_buffer(uv_handle_t*, std::size_t, uv_buf_t* buf) {
  buf->base = nullptr;
  buf->len = 0;
}

ssize_t read_socket(uv_stream_t* stream, char* buf, std::size_t len) {
  uv_os_fd_t fd;
  if (uv_fileno(reinterpret_cast<const uv_handle_t*>(stream), &fd) != 0) return UV_EBADF;
  ssize_t n;
  do {
    n = ::recv(fd, buf, len, 0);
  } while (n < 0 && errno == EINTR);
  if (n > 0) return n;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
  // The end, or an error: libuv stops reading then, and so does this (the socket would stay
  // readable and be reported again at every turn).
  ssize_t result = n == 0 ? UV_EOF : -errno;
  uv_read_stop(stream);
  return result;
}

}  // namespace bulwark
