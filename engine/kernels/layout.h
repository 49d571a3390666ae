// layout.h: one buffer cut into named regions, computed in one place.
//
// A kernel that keeps several arrays in one buffer (CUDA shared memory, a CPU
// thread's scratch) declares the cut once, as a struct of Regions built with a
// Carver; the kernel takes its pointers from that struct and its launcher
// reserves the struct's `total`, so the two cannot disagree about the size.
// LOOM_HD: both compilers build it, and the CPU tests check every layout
// (tests/test_kernel_layouts.cpp: no two regions overlap, the total covers
// them all).
#pragma once

#include <cstdint>

#include "engine/host_device.h"

namespace loom::kernels {

// `size` elements starting `offset` elements into the buffer.
struct Region {
  int64_t offset = 0, size = 0;
  template <class T>
  LOOM_HD T* in(T* base) const {
    return base + offset;
  }
};

// Hands out consecutive regions; `end` is the size of everything taken so far.
struct Carver {
  int64_t end = 0;
  LOOM_HD Region take(int64_t size) {
    const Region r{end, size};
    end += size;
    return r;
  }
};

}  // namespace loom::kernels
