// CRC-32 (the zlib/PNG polynomial), so tests can compare bodies with Python's zlib.crc32.
#pragma once

#include <cstddef>
#include <cstdint>

namespace testd {

inline std::uint32_t crc_table[256];

inline void crc_init() {
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}

inline std::uint32_t crc_update(std::uint32_t crc, const char* p, std::size_t n) {
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i)
    crc = crc_table[(crc ^ static_cast<std::uint8_t>(p[i])) & 0xff] ^ (crc >> 8);
  return ~crc;
}

// CRC of the generated body of `size` bytes (byte i is i % 251); `block` holds the pattern
// from phase 0 for at least 251 * 64 bytes.
inline std::uint32_t pattern_crc(const char* block, std::uint64_t size) {
  std::uint32_t crc = 0;
  for (std::uint64_t off = 0; off < size;) {
    std::uint64_t n = size - off < 251 * 63 ? size - off : 251 * 63;
    crc = crc_update(crc, block + off % 251, static_cast<std::size_t>(n));
    off += n;
  }
  return crc;
}

}  // namespace testd
