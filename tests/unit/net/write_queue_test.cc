// OutBatch (net/write_queue.h): one send/sendmsg for the pieces of an outgoing write, the bytes the
// socket does not take at once copied into one queued block. Driven over a Unix socketpair
// wrapped in uv_pipe_t handles on a private loop: the writer's buffer fills up for real, so
// short writes happen without any fake.
#include "net/write_queue.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <csignal>
#include <cstring>
#include <string>

using namespace bulwark;

namespace {

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
void on_write(uv_write_t* req, int status) {
  auto* self = static_cast<PipePair*>(req->handle->data);
  free_queued_write(req);
  ++self->write_cbs;
  self->write_status = status;
}

// `n` bytes of a pattern that never repeats within 251 bytes, tagged by `seed`, so a byte out
// of place or a lost or repeated piece changes the content.
std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + seed) % 251);
  return s;
}

}  // namespace

TEST_CASE("OutBatch: a socket with room takes everything at once; nothing is queued") {
  PipePair pp;
  OutBatch b;
  std::string body = "hello";
  b.add_copy("HTTP/1.1 200 OK\r\n\r\n");
  b.add(body);
  CHECK(b.bytes() == 19 + 5);
  CHECK(b.flush(pp.out(), on_write) == 0);
  CHECK(pp.queued() == 0);
  // The batch is empty again after a flush, ready for the next write.
  CHECK(b.empty());
  CHECK(b.bytes() == 0);
  pp.start_reading();
  pp.receive(24);
  CHECK(pp.received == "HTTP/1.1 200 OK\r\n\r\nhello");
  CHECK(pp.write_cbs == 0);  // no uv_write was started, so no callback comes
}

TEST_CASE("OutBatch: a short writev queues exactly the rest, in order, across piece boundaries") {
  PipePair pp;
  // Pieces of odd sizes, so the short write almost surely ends inside one of them and the
  // copy must resume mid-piece.
  std::string a = pattern(100003, 1), c = pattern(300007, 3), e = pattern(777, 5);
  OutBatch b;
  b.add(a);
  b.add_copy("--framing-1--");
  b.add(c);
  b.add_chunk_header(0xabc);
  b.add(e);
  std::size_t total = b.bytes();
  std::string expected = a + "--framing-1--" + c + "abc\r\n" + e;
  REQUIRE(total == expected.size());
  CHECK(b.flush(pp.out(), on_write) == 0);
  // The socket took part; the rest waits in libuv's queue, where backpressure reads it.
  std::size_t queued = pp.queued();
  CHECK(queued > 0);
  CHECK(queued < total);
  CHECK(b.empty());
  // The borrowed bytes may change once flush() returns: what was not written went into the
  // queued block, which is a copy.
  a.assign(a.size(), 'X');
  c.assign(c.size(), 'Y');
  e.assign(e.size(), 'Z');
  pp.start_reading();
  pp.receive(total);
  CHECK(pp.write_cbs == 1);
  CHECK(pp.write_status == 0);
  CHECK(pp.queued() == 0);
  REQUIRE(pp.received.size() == expected.size());
  CHECK(pp.received == expected);
}

TEST_CASE("OutBatch: a second flush while the first is still queued is written after it") {
  PipePair pp;
  std::string first = pattern(600000, 11), second = pattern(5000, 13);
  OutBatch b;
  b.add(first);
  CHECK(b.flush(pp.out(), on_write) == 0);
  REQUIRE(pp.queued() > 0);
  // uv_try_write refuses while a write is queued: the whole second batch must queue behind
  // the first, never overtake it (the socket may have room again by now).
  b.add(second);
  b.add_copy("end");
  CHECK(b.flush(pp.out(), on_write) == 0);
  CHECK(pp.queued() >= second.size() + 3);
  pp.start_reading();
  pp.receive(first.size() + second.size() + 3);
  CHECK(pp.write_cbs == 2);
  CHECK(pp.received == first + second + "end");
}

TEST_CASE("OutBatch: add() borrows until flush, add_copy() copies at once") {
  PipePair pp;
  std::string borrowed = "borrowed";
  std::string copied = "copied";
  OutBatch b;
  b.add(borrowed);
  b.add_copy(copied);
  // Changing both before the flush: the borrowed piece is read at flush time, the copied
  // one was taken when added.
  borrowed[0] = 'B';
  copied[0] = 'C';
  REQUIRE(b.flush(pp.out(), on_write) == 0);
  pp.start_reading();
  pp.receive(14);
  CHECK(pp.received == "Borrowedcopied");
}

TEST_CASE("OutBatch: consecutive copies share scratch; empty pieces add nothing") {
  PipePair pp;
  OutBatch b;
  b.add("", 0);
  b.add_copy("");
  CHECK(b.empty());
  // flush() of an empty batch writes nothing and starts no write.
  CHECK(b.flush(pp.out(), on_write) == 0);
  std::string body = "body";
  b.add_copy("a");
  b.add_copy("b");
  b.add(body);
  b.add_copy("c");
  b.add_chunk_header(0);
  b.add_chunk_header(255);
  // A long run of copies forces the scratch string to grow (and move): pieces must keep
  // pointing at the right bytes, which they do by offset.
  std::string many;
  for (int i = 0; i < 2000; ++i) {
    std::string s = std::to_string(i) + ",";
    b.add_copy(s);
    many += s;
  }
  std::string expected = "ab" + body + "c" + "0\r\n" + "ff\r\n" + many;
  CHECK(b.bytes() == expected.size());
  REQUIRE(b.flush(pp.out(), on_write) == 0);
  pp.start_reading();
  pp.receive(expected.size());
  CHECK(pp.received == expected);
}

TEST_CASE("OutBatch: clear() drops what was added") {
  PipePair pp;
  OutBatch b;
  b.add_copy("dropped");
  b.clear();
  CHECK(b.empty());
  CHECK(b.bytes() == 0);
  b.add_copy("kept");
  REQUIRE(b.flush(pp.out(), on_write) == 0);
  pp.start_reading();
  pp.receive(4);
  CHECK(pp.received == "kept");
}

TEST_CASE("OutBatch: a write to a closed peer fails with a libuv error and empties the batch") {
  PipePair pp;
  uv_close(reinterpret_cast<uv_handle_t*>(&pp.reader), nullptr);
  uv_run(&pp.loop, UV_RUN_NOWAIT);  // the peer's descriptor is closed now
  OutBatch b;
  b.add_copy("lost");
  int rc = b.flush(pp.out(), on_write);
  CHECK(rc < 0);
  CHECK(rc != UV_EAGAIN);
  CHECK(b.empty());
  CHECK(pp.write_cbs == 0);
}

TEST_CASE("backpressure marks: the low mark is below the high mark, and one read fits below it") {
  // A side pauses reading above kHighWater and resumes below kLowWater: with the marks the
  // other way round it would never resume. One read buffer's worth queued must not by itself
  // cross the high mark, or every full read would pause the other side.
  static_assert(kLowWater < kHighWater);
  static_assert(kReadBufferSize < kHighWater);
  CHECK(kHighWater - kLowWater >= kReadBufferSize);
}

TEST_CASE("OutBatch: more pieces than one sendmsg takes (IOV_MAX) all arrive, in order") {
  PipePair pp;
  pp.start_reading();
  // 3,000 borrowed pieces of 3 bytes (a chunked body of tiny chunks looks like this): the first
  // send takes at most IOV_MAX of them, the rest is queued behind it.
  std::string data = pattern(9000, 7);
  OutBatch b;
  for (std::size_t i = 0; i < data.size(); i += 3) b.add(data.data() + i, 3);
  CHECK(b.flush(pp.out(), on_write) == 0);
  pp.receive(data.size());
  CHECK(pp.received == data);
  CHECK(pp.write_status <= 0);  // a queued rest, if any, completed without error
}

TEST_CASE("OutBatch: a write to a peer that has gone is an error code, not a signal") {
  PipePair pp;
  uv_close(reinterpret_cast<uv_handle_t*>(&pp.reader), nullptr);
  uv_run(&pp.loop, UV_RUN_NOWAIT);
  OutBatch b;
  b.add_copy("GET / HTTP/1.1\r\n\r\n");
  // With SIGPIPE's default action a write without MSG_NOSIGNAL would end this test run.
  std::signal(SIGPIPE, SIG_DFL);
  int rc = b.flush(pp.out(), on_write);
  std::signal(SIGPIPE, SIG_IGN);
  CHECK((rc == UV_EPIPE || rc == UV_ECONNRESET));
}
