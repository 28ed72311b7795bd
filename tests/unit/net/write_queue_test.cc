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

#include "net/pipe_pair.h"

using namespace bulwark;
using bulwark::test::PipePair;
using bulwark::test::on_write;

namespace {

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
