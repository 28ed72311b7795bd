// Redis Cluster's key-to-slot mapping and its redirections, as the cluster specification
// defines them: slot = CRC16 (XMODEM) of the key mod 16384, where a key holding "{tag}" with a
// non-empty tag hashes only the tag, so keys sharing a tag live on one node.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bulwark {

inline constexpr int kRedisSlots = 16384;

std::uint16_t redis_crc16(std::string_view data);
std::uint16_t redis_key_slot(std::string_view key);

// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381" (an error reply's text).
struct RedisRedirect {
  bool ask = false;
  std::uint16_t slot = 0;
  std::string host;
  int port = 0;
};
std::optional<RedisRedirect> parse_redis_redirect(std::string_view error);

}  // namespace bulwark
