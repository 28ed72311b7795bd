// A FIFO of objects that carry their own links (no allocation to queue or dequeue, O(1)
// removal from anywhere). T holds a ListHook<T> member named by Hook.
#pragma once

namespace bulwark {

template <typename T>
struct ListHook {
  T* prev = nullptr;
  T* next = nullptr;
  bool linked = false;
};

template <typename T, ListHook<T> T::*Hook>
class IntrusiveList {
 public:
  bool empty() const { return head_ == nullptr; }
  T* front() const { return head_; }
  T* back() const { return tail_; }
  static bool linked(const T& x) { return (x.*Hook).linked; }

  void push_back(T& x) {
    ListHook<T>& h = x.*Hook;
    h.prev = tail_;
    h.next = nullptr;
    if (tail_)
      (tail_->*Hook).next = &x;
    else
      head_ = &x;
    tail_ = &x;
    h.linked = true;
  }

  void remove(T& x) {
    ListHook<T>& h = x.*Hook;
    if (!h.linked) return;
    if (h.prev)
      (h.prev->*Hook).next = h.next;
    else
      head_ = h.next;
    if (h.next)
      (h.next->*Hook).prev = h.prev;
    else
      tail_ = h.prev;
    h.prev = h.next = nullptr;
    h.linked = false;
  }

 private:
  T* head_ = nullptr;
  T* tail_ = nullptr;
};

}  // namespace bulwark
