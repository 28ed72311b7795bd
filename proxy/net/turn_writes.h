// TurnWrites holds the small writes a worker's sockets make during one loop turn and sends
// each socket's bytes in one call once every callback of the turn has run (Worker::between_turns,
// just before the loop polls again). A turn that handles several requests then hands its
// backend and its clients their bytes back to back rather than spread over the turn, so a
// peer that went to sleep is woken once per turn, not once per request: on a machine where
// waking a sleeping process on another CPU is dear (an IPI, a VM exit), that is most of what
// a proxy's request costs beyond its system calls (docs/performance.md).
//
// Held bytes count as written: a socket that closes sends them first. Only batches up to
// kTurnHoldMax bytes are held (copied, since body pieces point into the read buffer the next
// read reuses); a larger one is sent at once, after what the socket already holds.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <uv.h>

namespace bulwark {

class OutBatch;

inline constexpr std::size_t kTurnHoldMax = 16 * 1024;

class TurnWrites;

// A socket owner whose writes can be held for the turn.
class TurnHolder {
 public:
  virtual ~TurnHolder();  // a holder gone before the turn's end is forgotten (nothing sent)
  bool holding() const { return held_ != nullptr; }
  // Sends what is held now (the turn's end, a larger write, a close). False: the socket
  // failed; the owner has dealt with it (closed).
  virtual bool send_held() = 0;

 protected:
  TurnHolder() = default;
  // Sends the held bytes on `stream` (send_bytes: what the socket does not take is queued,
  // `cb` runs when that is written) and gives the buffer back to the turn. 0 (also when
  // nothing is held) or a libuv error code.
  int send_held_bytes(uv_stream_t* stream, uv_write_cb cb);

 private:
  friend class TurnWrites;
  TurnWrites* turn_ = nullptr;
  std::unique_ptr<std::string> held_;
  std::size_t index_ = 0;  // in turn_->due_
};

class TurnWrites {
 public:
  TurnWrites() = default;
  TurnWrites(const TurnWrites&) = delete;
  TurnWrites& operator=(const TurnWrites&) = delete;

  // Moves `out` into what `h` holds for this turn (copying its pieces); false when it is not
  // to be held (too large, or the turn is being flushed): the caller sends it now, after
  // sending what `h` holds.
  bool hold(TurnHolder& h, OutBatch& out);
  // Sends what every holder holds, in the order they first held something.
  void flush();
  bool empty() const { return due_.empty(); }
  void give_back(std::unique_ptr<std::string> bytes);

  // The worker's TurnWrites on this thread (null: every write goes out at once).
  static TurnWrites* current();
  static void set_current(TurnWrites* t);

 private:
  friend class TurnHolder;
  std::vector<TurnHolder*> due_;
  std::vector<std::unique_ptr<std::string>> spare_;  // buffers to lend, kept between turns
  bool flushing_ = false;
};

}  // namespace bulwark
