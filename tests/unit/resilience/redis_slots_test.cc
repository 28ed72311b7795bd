// Redis Cluster key slots (resilience/redis_slots.h) against the cluster specification's
// published values: CRC16/XMODEM("123456789") = 0x31C3, hash tags as specified, and slots
// redis-server's CLUSTER KEYSLOT gives.
#include <doctest/doctest.h>

#include "resilience/redis_slots.h"

using namespace bulwark;

TEST_CASE("redis_crc16 is CRC16/XMODEM, the cluster specification's check value") {
  CHECK(redis_crc16("123456789") == 0x31C3);
  CHECK(redis_crc16("") == 0);
}

TEST_CASE("redis_key_slot matches CLUSTER KEYSLOT") {
  CHECK(redis_key_slot("123456789") == 12739);  // 0x31C3 mod 16384
  CHECK(redis_key_slot("foo") == 12182);
  CHECK(redis_key_slot("bar") == 5061);
  CHECK(redis_key_slot("hello") == 866);
  CHECK(redis_key_slot("somekey") == 11058);
  CHECK(redis_key_slot("") == 0);
}

TEST_CASE("redis_key_slot hashes the first non-empty {tag} only") {
  // The specification's examples.
  CHECK(redis_key_slot("{user1000}.following") == redis_key_slot("{user1000}.followers"));
  CHECK(redis_key_slot("{user1000}.following") == redis_key_slot("user1000"));
  CHECK(redis_key_slot("foo{}{bar}") == redis_crc16("foo{}{bar}") % 16384);  // empty tag: whole key
  CHECK(redis_key_slot("foo{{bar}}zap") == redis_key_slot("{bar"));           // up to the first }
  CHECK(redis_key_slot("foo{bar}{zap}") == redis_key_slot("bar"));            // the first tag
  CHECK(redis_key_slot("{") == redis_crc16("{") % 16384);                     // unclosed
  CHECK(redis_key_slot("a}b{c") == redis_crc16("a}b{c") % 16384);             // } before {
}

TEST_CASE("parse_redis_redirect reads MOVED and ASK, refuses everything else") {
  auto m = parse_redis_redirect("MOVED 3999 127.0.0.1:6381");
  REQUIRE(m);
  CHECK_FALSE(m->ask);
  CHECK(m->slot == 3999);
  CHECK(m->host == "127.0.0.1");
  CHECK(m->port == 6381);
  auto a = parse_redis_redirect("ASK 16383 redis-2.example:7000");
  REQUIRE(a);
  CHECK(a->ask);
  CHECK(a->slot == 16383);
  CHECK(a->host == "redis-2.example");
  auto v6 = parse_redis_redirect("MOVED 1 [::1]:7001");
  REQUIRE(v6);
  CHECK(v6->host == "::1");
  CHECK(v6->port == 7001);
  for (const char* bad : {"MOVED", "MOVED 16384 1.2.3.4:5", "MOVED x 1.2.3.4:5", "MOVED 1 1.2.3.4",
                          "MOVED 1 1.2.3.4:0", "MOVED 1 :6379", "ASK 1 h:99999", "NOSCRIPT No matching",
                          "ERR MOVED 1 h:1", "MOVED 1 h:1x"})
    CHECK_MESSAGE(!parse_redis_redirect(bad), bad);
}
