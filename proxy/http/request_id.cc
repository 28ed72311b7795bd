#include "http/request_id.h"

namespace bulwark {

namespace {
std::uint64_t splitmix(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

RequestIdGenerator::RequestIdGenerator(std::uint64_t seed) {
  for (auto& s : s_) s = splitmix(seed);
}

// xoshiro256**
std::uint64_t RequestIdGenerator::next64() {
  std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

void RequestIdGenerator::next(char* out) {
  static const char hex[] = "0123456789abcdef";
  std::uint64_t a = next64(), b = next64();
  a = (a & ~0xf000ull) | 0x4000ull;                  // version 4
  b = (b & ~(0xc000ull << 48)) | (0x8000ull << 48);  // variant 10
  int at = 0;
  auto emit = [&](std::uint64_t v, int nibbles) {
    for (int i = nibbles - 1; i >= 0; --i) out[at++] = hex[(v >> (i * 4)) & 0xf];
  };
  emit(a >> 32, 8);
  out[at++] = '-';
  emit(a >> 16, 4);
  out[at++] = '-';
  emit(a, 4);
  out[at++] = '-';
  emit(b >> 48, 4);
  out[at++] = '-';
  emit(b, 12);
}

}  // namespace bulwark
