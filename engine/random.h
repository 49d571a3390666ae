// random.h: a seeded, counter-based random number generator (Philox-4x32-10).
//
// Element i of a random fill is a pure function of (seed, offset + i), so the
// numbers do not depend on the thread count, on the device, or on how the work
// is split; and a Generator's whole state is two integers, which a checkpoint
// can store to resume exactly.
#pragma once

#include <array>
#include <cstdint>

#include "engine/philox.h"  // philox4x32, uint_to_unit: shared with the CUDA kernels
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

}  // namespace loom
