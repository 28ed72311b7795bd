#include "upstream/idle_list.h"

#include <doctest/doctest.h>

using namespace bulwark;

TEST_CASE("idle list: newest first, expiry from the oldest, with a fake clock") {
  IdleList list;
  IdleHook a, b, c;
  std::uint64_t now = 1000;
  list.push_newest(a, now);
  now += 10;
  list.push_newest(b, now);
  now += 10;
  list.push_newest(c, now);
  CHECK(list.size() == 3);
  CHECK(list.newest() == &c);
  CHECK(list.oldest() == &a);

  const std::uint64_t timeout = 100;
  CHECK(list.expired(now, timeout) == nullptr);
  CHECK(list.next_expiry_in(now, timeout) == 80);  // a went idle at 1000, now is 1020
  now = 1100;
  CHECK(list.expired(now, timeout) == &a);
  list.remove(a);
  CHECK(list.expired(now, timeout) == nullptr);
  CHECK(list.next_expiry_in(now, timeout) == 10);
  now = 1200;
  CHECK(list.expired(now, timeout) == &b);
  list.remove(b);
  CHECK(list.expired(now, timeout) == &c);
}

TEST_CASE("idle list: removal from any position and reuse of the newest") {
  IdleList list;
  IdleHook hooks[4];
  for (auto& h : hooks) list.push_newest(h, 0);
  list.remove(hooks[2]);
  CHECK(list.size() == 3);
  CHECK_FALSE(hooks[2].linked);
  list.remove(hooks[2]);  // twice is harmless
  CHECK(list.size() == 3);
  CHECK(list.newest() == &hooks[3]);
  list.remove(hooks[3]);
  CHECK(list.newest() == &hooks[1]);
  CHECK(list.oldest() == &hooks[0]);
  list.remove(hooks[0]);
  list.remove(hooks[1]);
  CHECK(list.empty());
  CHECK(list.newest() == nullptr);
  CHECK(list.next_expiry_in(5, 5) == -1);
}
