// The idle connections of a pool, newest first, with the time each became idle. Pure
// bookkeeping (no I/O, time passed in), so expiry is unit-tested with a fake clock.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bulwark {

struct IdleHook {
  IdleHook* prev = nullptr;  // newer
  IdleHook* next = nullptr;  // older
  std::uint64_t since_ms = 0;
  bool linked = false;
  void* owner = nullptr;
};

class IdleList {
 public:
  void push_newest(IdleHook& h, std::uint64_t now_ms) {
    h.since_ms = now_ms;
    h.prev = nullptr;
    h.next = newest_;
    if (newest_)
      newest_->prev = &h;
    else
      oldest_ = &h;
    newest_ = &h;
    h.linked = true;
    ++size_;
  }
  void remove(IdleHook& h) {
    if (!h.linked) return;
    if (h.prev)
      h.prev->next = h.next;
    else
      newest_ = h.next;
    if (h.next)
      h.next->prev = h.prev;
    else
      oldest_ = h.prev;
    h.prev = h.next = nullptr;
    h.linked = false;
    --size_;
  }
  IdleHook* newest() const { return newest_; }
  IdleHook* oldest() const { return oldest_; }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // The oldest entry once it has been idle for `timeout_ms` at `now_ms`, else nullptr.
  IdleHook* expired(std::uint64_t now_ms, std::uint64_t timeout_ms) const {
    return oldest_ && oldest_->since_ms + timeout_ms <= now_ms ? oldest_ : nullptr;
  }
  // Milliseconds until the oldest entry expires (0: already), or -1 when empty.
  std::int64_t next_expiry_in(std::uint64_t now_ms, std::uint64_t timeout_ms) const {
    if (!oldest_) return -1;
    std::uint64_t due = oldest_->since_ms + timeout_ms;
    return due > now_ms ? static_cast<std::int64_t>(due - now_ms) : 0;
  }

 private:
  IdleHook* newest_ = nullptr;
  IdleHook* oldest_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace bulwark
