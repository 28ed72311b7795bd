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

}  // namespace testd
