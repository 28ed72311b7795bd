// TurnWrites (net/turn_writes.h): the small writes of a loop turn held per socket and sent
// together at the turn's end. Driven over real socketpairs (pipe_pair.h): what the reader
// receives, and when, is what a peer would see.
#include "net/turn_writes.h"

#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <string>

#include "net/pipe_pair.h"
#include "net/write_queue.h"

using namespace bulwark;
using bulwark::test::on_write;
using bulwark::test::PipePair;

namespace {

// Writes the way ClientConnection::flush and UpstreamConnection::flush do.
struct Holder : TurnHolder {
  explicit Holder(PipePair& p) : pp(p) {}
  bool write(TurnWrites& turn, OutBatch& b) {
    if (turn.hold(*this, b)) return true;
    if (holding() && !send_held()) return false;
    return b.flush(pp.out(), on_write) == 0;
  }
  bool send_held() override {
    ++sends;
    bool ok = send_held_bytes(pp.out(), on_write) == 0;
    if (after_send) after_send();
    return ok;
  }
  PipePair& pp;
  int sends = 0;
  std::function<void()> after_send;
};

void turn_loop(PipePair& pp) { uv_run(&pp.loop, UV_RUN_NOWAIT); }

}  // namespace

TEST_CASE("TurnWrites: a turn's small writes wait for the turn's end and leave in one send") {
  PipePair pp;
  pp.start_reading();
  TurnWrites turn;
  Holder h(pp);
  OutBatch b;
  b.add_copy("HTTP/1.1 200 OK\r\n\r\n");
  CHECK(h.write(turn, b));
  CHECK(b.empty());  // moved into what the socket holds
  b.add_copy("second");
  CHECK(h.write(turn, b));
  CHECK(h.holding());
  CHECK_FALSE(turn.empty());
  turn_loop(pp);
  CHECK(pp.received.empty());  // nothing went before the turn's end

  turn.flush();
  CHECK(h.sends == 1);
  CHECK_FALSE(h.holding());
  CHECK(turn.empty());
  pp.receive(25);
  CHECK(pp.received == "HTTP/1.1 200 OK\r\n\r\nsecond");

  turn.flush();  // nothing held: nothing sent again
  CHECK(h.sends == 1);
}

TEST_CASE("TurnWrites: pieces that point into a reused read buffer are copied when held") {
  PipePair pp;
  pp.start_reading();
  TurnWrites turn;
  Holder h(pp);
  OutBatch b;
  char read_buffer[8] = "body-1";
  b.add(read_buffer, 6);
  CHECK(h.write(turn, b));
  std::memcpy(read_buffer, "XXXXXX", 6);  // the next read
  turn.flush();
  pp.receive(6);
  CHECK(pp.received == "body-1");
}

TEST_CASE("TurnWrites: a batch too large to hold goes at once, after what the socket holds") {
  PipePair pp;
  pp.start_reading();
  TurnWrites turn;
  Holder h(pp);
  OutBatch b;
  b.add_copy("head;");
  CHECK(h.write(turn, b));
  std::string large(kTurnHoldMax, 'x');
  b.add(large);  // held + this would pass kTurnHoldMax
  CHECK(h.write(turn, b));
  CHECK_FALSE(h.holding());
  CHECK(turn.empty() == false);  // the slot stays until the flush, which skips it
  pp.receive(5 + large.size());
  CHECK(pp.received == "head;" + large);
  turn.flush();
  CHECK(h.sends == 1);  // only the send the large write made
  turn_loop(pp);
  CHECK(pp.received.size() == 5 + large.size());
}

TEST_CASE("TurnWrites: writes made while the turn is sent go at once and keep their order") {
  PipePair p1, p2;
  p1.start_reading();
  p2.start_reading();
  TurnWrites turn;
  Holder first(p1), second(p2);
  OutBatch b;
  b.add_copy("a1;");
  CHECK(first.write(turn, b));
  b.add_copy("b1;");
  CHECK(second.write(turn, b));
  // Sending the first socket's bytes leads to a write on the second (an error reply, say).
  first.after_send = [&] {
    OutBatch reply;
    reply.add_copy("b2;");
    CHECK(second.write(turn, reply));
  };
  turn.flush();
  CHECK(first.sends == 1);
  CHECK(second.sends == 1);  // its held bytes went before the reply, and not again after
  CHECK(turn.empty());
  p1.receive(3);
  p2.receive(6);
  CHECK(p1.received == "a1;");
  CHECK(p2.received == "b1;b2;");
}

TEST_CASE("TurnWrites: a socket that sends what it holds itself (a close) is skipped at the end") {
  PipePair pp;
  pp.start_reading();
  TurnWrites turn;
  Holder h(pp);
  OutBatch b;
  b.add_copy("last response");
  CHECK(h.write(turn, b));
  CHECK(h.send_held());
  turn.flush();
  CHECK(h.sends == 1);
  pp.receive(13);
  turn_loop(pp);
  CHECK(pp.received == "last response");
}

TEST_CASE("TurnWrites: an empty batch holds nothing") {
  PipePair pp;
  TurnWrites turn;
  Holder h(pp);
  OutBatch b;
  CHECK(turn.hold(h, b));
  CHECK_FALSE(h.holding());
  CHECK(turn.empty());
}

TEST_CASE("TurnWrites: held bytes the socket does not take at once are queued, in order") {
  PipePair pp;  // the reader does not read yet: the writer's buffer fills
  TurnWrites turn;
  Holder h(pp);
  OutBatch b;
  std::string fill(256 * 1024, 'f');
  b.add(fill);
  CHECK(b.flush(pp.out(), on_write) == 0);  // fills the socket; the rest is queued
  CHECK(pp.queued() > 0);
  b.add_copy("after");
  CHECK(h.write(turn, b));
  turn.flush();
  pp.start_reading();
  pp.receive(fill.size() + 5);
  CHECK(pp.received == fill + "after");
  CHECK(pp.write_status == 0);
}
