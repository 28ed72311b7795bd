// A Unix socketpair wrapped in two uv_pipe_t handles on a private loop, for the write-path
// tests: the writer's buffer is small and fills up for real, so short writes happen without
// any fake.
#pragma once

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <csignal>
#include <string>

#include "net/write_queue.h"

namespace bulwark::test {

// A writer and a reader pipe on one loop. The reader does not read until start_reading(), so
// the writer's socket buffer fills and flushes become short writes.
struct PipePair {
  PipePair() {
    std::signal(SIGPIPE, SIG_IGN);  // as the server does: a closed peer is an error code
    uv_loop_init(&loop);
    int fds[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    // Small buffers make the first short write come early (the kernel may round them up).
    int small = 16 * 1024;
    setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(fds[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    uv_pipe_init(&loop, &writer, 0);
    uv_pipe_init(&loop, &reader, 0);
    REQUIRE(uv_pipe_open(&writer, fds[0]) == 0);
    REQUIRE(uv_pipe_open(&reader, fds[1]) == 0);
    writer.data = this;
    reader.data = this;
  }
  ~PipePair() {
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&writer)))
      uv_close(reinterpret_cast<uv_handle_t*>(&writer), nullptr);
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&reader)))
      uv_close(reinterpret_cast<uv_handle_t*>(&reader), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }
  PipePair(const PipePair&) = delete;
  PipePair& operator=(const PipePair&) = delete;

  uv_stream_t* out() { return reinterpret_cast<uv_stream_t*>(&writer); }
  std::size_t queued() const {
    return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&writer));
  }

  void start_reading() {
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&reader),
        [](uv_handle_t*, std::size_t, uv_buf_t* buf) {
          static char scratch[64 * 1024];
          *buf = uv_buf_init(scratch, sizeof scratch);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
          auto* self = static_cast<PipePair*>(s->data);
          if (n > 0) self->received.append(buf->base, static_cast<std::size_t>(n));
          if (n < 0) self->eof = true;
        });
  }
  // Runs the loop until `n` bytes arrived (or nothing is left to run).
  void receive(std::size_t n) {
    while (received.size() < n && uv_run(&loop, UV_RUN_ONCE) != 0) {
    }
  }

  uv_loop_t loop{};
  uv_pipe_t writer{};
  uv_pipe_t reader{};
  std::string received;
  bool eof = false;
  int write_cbs = 0;
  int write_status = 1;
};

// The write callback every caller of flush() passes: frees the queued block first.
inline void on_write(uv_write_t* req, int status) {
  auto* self = static_cast<PipePair*>(req->handle->data);
  free_queued_write(req);
  ++self->write_cbs;
  self->write_status = status;
}

}  // namespace bulwark::test
