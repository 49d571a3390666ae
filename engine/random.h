// random.h: a seeded, counter-based random number generator (Philox-4x32-10).
//
// Element i of a random fill is a pure function of (seed, offset + i), so the
// numbers do not depend on the thread count, on the device, or on how the work
// is split; and a Generator's whole state is two integers, which a checkpoint
// can store to resume exactly.
#pragma once

#include <array>
#include <cstdint>

#include "engine/record.h"

namespace loom {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  // Reserves `count` counters for one fill and returns the first.
  uint64_t advance(uint64_t count) {
    const uint64_t first = offset_;
    offset_ += count;
    return first;
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// One Philox-4x32-10 block: four 32-bit random words for a 64-bit counter.
std::array<uint32_t, 4> philox4x32(uint64_t counter, uint64_t key);

// Uniform in [0, 1) from 32 random bits (24 bits of mantissa for float, 32 for double).
inline double uint_to_unit(uint32_t bits) { return bits * (1.0 / 4294967296.0); }

}  // namespace loom
