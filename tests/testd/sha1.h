// SHA-1 (RFC 3174), only for the WebSocket handshake of the test backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace testd {
void sha1(const void* data, std::size_t len, std::uint8_t out[20]);
std::string base64(const std::uint8_t* data, std::size_t len);
}  // namespace testd
