#include "resilience/redis_slots.h"

#include <charconv>

namespace bulwark {

std::uint16_t redis_crc16(std::string_view data) {
  std::uint16_t crc = 0;
  for (unsigned char byte : data) {
    crc = static_cast<std::uint16_t>(crc ^ (byte << 8));
    for (int i = 0; i < 8; ++i)
      crc = static_cast<std::uint16_t>((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
  }
  return crc;
}

std::uint16_t redis_key_slot(std::string_view key) {
  std::size_t open = key.find('{');
  if (open != std::string_view::npos) {
    std::size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1)
      key = key.substr(open + 1, close - open - 1);
  }
  return static_cast<std::uint16_t>(redis_crc16(key) & (kRedisSlots - 1));
}

std::optional<RedisRedirect> parse_redis_redirect(std::string_view error) {
  RedisRedirect r;
  if (error.substr(0, 6) == "MOVED ") {
    error.remove_prefix(6);
  } else if (error.substr(0, 4) == "ASK ") {
    r.ask = true;
    error.remove_prefix(4);
  } else {
    return std::nullopt;
  }
  std::size_t space = error.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  unsigned slot = 0;
  auto [p, ec] = std::from_chars(error.data(), error.data() + space, slot);
  if (ec != std::errc() || p != error.data() + space || slot >= kRedisSlots) return std::nullopt;
  r.slot = static_cast<std::uint16_t>(slot);
  std::string_view address = error.substr(space + 1);
  std::size_t colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  auto [q, ec2] = std::from_chars(address.data() + colon + 1, address.data() + address.size(), r.port);
  if (ec2 != std::errc() || q != address.data() + address.size() || r.port <= 0 || r.port > 65535)
    return std::nullopt;
  std::string_view host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  r.host = std::string(host);
  return r;
}

}  // namespace bulwark
