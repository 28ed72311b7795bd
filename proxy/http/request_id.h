// Request ids: random, UUID-formatted, from a per-worker generator (no locks, no syscalls).
#pragma once

#include <cstdint>

namespace bulwark {

class RequestIdGenerator {
 public:
  explicit RequestIdGenerator(std::uint64_t seed);
  // Writes 36 characters (8-4-4-4-12 hex, version 4 layout) into out; no terminator.
  void next(char* out);

 private:
  std::uint64_t next64();
  std::uint64_t s_[4];
};

}  // namespace bulwark
