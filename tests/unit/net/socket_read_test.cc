// Reading with recv through libuv's UV_ENOBUFS report (net/socket_read.h), on a real socket
// pair and loop: what is read, the end, the 32-buffer bound per wake-up, and an owner that
// does not want to read.
#include "net/socket_read.h"

#include <doctest/doctest.h>
#include <sys/socket.h>

#include <string>

#include "pipe_pair.h"

using namespace bulwark;
using bulwark::test::PipePair;

namespace {

struct Reader {
  std::size_t buffer_size = 64;
  bool want = true;  // what keep_going() says
  int callbacks = 0;
  int reads = 0;
  std::string bytes;
  ssize_t end = 0;  // UV_EOF or an error once seen
};

Reader* reader_of(uv_stream_t* s) { return static_cast<Reader*>(s->data); }

void start(PipePair& p, Reader& r) {
  auto* stream = reinterpret_cast<uv_stream_t*>(&p.reader);
  stream->data = &r;
  REQUIRE(uv_read_start(stream, no_read_buffer, [](uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
            Reader* self = reader_of(s);
            ++self->callbacks;
            REQUIRE(nread == UV_ENOBUFS);  // libuv leaves the reading to us
            static char buf[64 * 1024];
            ssize_t rc = drain_socket(
                s, buf, self->buffer_size,
                [self](const char* data, std::size_t n) {
                  ++self->reads;
                  self->bytes.append(data, n);
                },
                [self] { return self->want; });
            if (rc < 0) self->end = rc;
          }) == 0);
}

void write_all(PipePair& p, const std::string& s) {
  uv_os_fd_t fd;
  REQUIRE(uv_fileno(reinterpret_cast<uv_handle_t*>(&p.writer), &fd) == 0);
  REQUIRE(::send(fd, s.data(), s.size(), 0) == static_cast<ssize_t>(s.size()));
}

void shut(PipePair& p) {
  uv_os_fd_t fd;
  REQUIRE(uv_fileno(reinterpret_cast<uv_handle_t*>(&p.writer), &fd) == 0);
  REQUIRE(::shutdown(fd, SHUT_WR) == 0);
}

}  // namespace

TEST_CASE("recv reads what the peer sent, then its end, and reading stops there") {
  PipePair p;
  Reader r;
  start(p, r);
  write_all(p, "hello");
  shut(p);
  for (int i = 0; i < 5; ++i) uv_run(&p.loop, UV_RUN_NOWAIT);
  CHECK(r.bytes == "hello");
  CHECK(r.end == UV_EOF);
  // Stopped at the end: the socket, readable for ever now, is not reported again.
  int seen = r.callbacks;
  for (int i = 0; i < 5; ++i) uv_run(&p.loop, UV_RUN_NOWAIT);
  CHECK(r.callbacks == seen);
}

TEST_CASE("one wake-up reads at most 32 full buffers; the rest comes at the next turn") {
  PipePair p;
  Reader r;
  r.buffer_size = 4;
  start(p, r);
  write_all(p, std::string(200, 'x'));
  uv_run(&p.loop, UV_RUN_NOWAIT);
  CHECK(r.callbacks == 1);
  CHECK(r.reads == 32);
  CHECK(r.bytes.size() == 128);
  for (int i = 0; i < 3; ++i) uv_run(&p.loop, UV_RUN_NOWAIT);
  CHECK(r.bytes.size() == 200);
  CHECK(r.end == 0);
}

TEST_CASE("an owner that does not want to read has its reading stopped, not reported each turn") {
  PipePair p;
  Reader r;
  r.want = false;
  start(p, r);
  write_all(p, "pending");
  for (int i = 0; i < 6; ++i) uv_run(&p.loop, UV_RUN_NOWAIT);
  CHECK(r.callbacks == 1);  // left on, the readable socket would call back at every turn
  CHECK(r.bytes.empty());
  // Started again when it wants to read: the bytes are still there.
  r.want = true;
  start(p, r);
  for (int i = 0; i < 3; ++i) uv_run(&p.loop, UV_RUN_NOWAIT);
  CHECK(r.bytes == "pending");
}
