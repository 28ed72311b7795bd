#include "websocket.h"

#include <cstdint>
#include <cstring>

namespace testd {

bool websocket_echo(std::string& buffer, std::string& reply, bool& close) {
  const auto* b = reinterpret_cast<const std::uint8_t*>(buffer.data());
  std::size_t have = buffer.size();
  if (have < 2) return false;
  std::uint8_t opcode = b[0] & 0x0f;
  bool masked = b[1] & 0x80;
  std::uint64_t plen = b[1] & 0x7f;
  std::size_t at = 2;
  if (plen == 126) {
    if (have < 4) return false;
    plen = (std::uint64_t(b[2]) << 8) | b[3];
    at = 4;
  } else if (plen == 127) {
    if (have < 10) return false;
    plen = 0;
    for (int i = 0; i < 8; ++i) plen = (plen << 8) | b[2 + i];
    at = 10;
  }
  std::uint8_t mask[4] = {0, 0, 0, 0};
  if (masked) {
    if (have < at + 4) return false;
    std::memcpy(mask, b + at, 4);
    at += 4;
  }
  if (have < at + plen) return false;
  std::string payload(buffer.data() + at, static_cast<std::size_t>(plen));
  for (std::size_t i = 0; i < payload.size(); ++i)
    payload[i] = static_cast<char>(payload[i] ^ mask[i % 4]);
  buffer.erase(0, at + static_cast<std::size_t>(plen));
  reply.clear();
  reply.push_back(static_cast<char>(0x80 | opcode));
  if (payload.size() < 126) {
    reply.push_back(static_cast<char>(payload.size()));
  } else if (payload.size() < 65536) {
    reply.push_back(static_cast<char>(126));
    reply.push_back(static_cast<char>(payload.size() >> 8));
    reply.push_back(static_cast<char>(payload.size() & 0xff));
  } else {
    reply.push_back(static_cast<char>(127));
    for (int i = 7; i >= 0; --i)
      reply.push_back(static_cast<char>((payload.size() >> (8 * i)) & 0xff));
  }
  reply += payload;
  close = opcode == 8;
  return true;
}

}  // namespace testd
