#include "net/turn_writes.h"

#include "net/write_queue.h"

namespace bulwark {

namespace {
thread_local TurnWrites* t_current = nullptr;
// Buffers kept for lending: enough for the sockets one busy turn touches; a larger one (a
// batch near kTurnHoldMax) is not kept above this capacity.
constexpr std::size_t kSpareBuffers = 64;
constexpr std::size_t kSpareCapacity = 2 * kTurnHoldMax;
}  // namespace

TurnWrites* TurnWrites::current() { return t_current; }
void TurnWrites::set_current(TurnWrites* t) { t_current = t; }

TurnHolder::~TurnHolder() {
  if (turn_) turn_->due_[index_] = nullptr;
}

int TurnHolder::send_held_bytes(uv_stream_t* stream, uv_write_cb cb) {
  if (!held_) return 0;
  TurnWrites* turn = turn_;
  turn->due_[index_] = nullptr;  // flush() skips it
  turn_ = nullptr;
  std::unique_ptr<std::string> bytes = std::move(held_);
  int rc = send_bytes(stream, bytes->data(), bytes->size(), cb);
  turn->give_back(std::move(bytes));
  return rc;
}

bool TurnWrites::hold(TurnHolder& h, OutBatch& out) {
  if (out.empty()) return true;  // nothing to send, nothing to hold
  if (flushing_) return false;
  std::size_t held = h.held_ ? h.held_->size() : 0;
  if (held + out.bytes() > kTurnHoldMax) return false;
  if (!h.held_) {
    if (spare_.empty()) {
      h.held_ = std::make_unique<std::string>();
      h.held_->reserve(1024);
    } else {
      h.held_ = std::move(spare_.back());
      spare_.pop_back();
    }
    h.turn_ = this;
    h.index_ = due_.size();
    due_.push_back(&h);
  }
  out.append_to(*h.held_);
  out.clear();
  return true;
}

void TurnWrites::flush() {
  flushing_ = true;  // what a holder's send leads to (an error reply) is written at once
  for (std::size_t i = 0; i < due_.size(); ++i)
    if (TurnHolder* h = due_[i]) h->send_held();  // takes its bytes back: due_[i] is cleared
  due_.clear();
  flushing_ = false;
}

void TurnWrites::give_back(std::unique_ptr<std::string> bytes) {
  if (!bytes || spare_.size() >= kSpareBuffers || bytes->capacity() > kSpareCapacity) return;
  bytes->clear();
  spare_.push_back(std::move(bytes));
}

}  // namespace bulwark
