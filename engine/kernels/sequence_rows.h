// sequence_rows.h: a sequence-first [L, B, H, *] tensor read through its
// strides, as the fused attention kernels read q, k, v and the feedback memory.
//
// Only the last axis must have unit stride; the other three may be anything
// (views of a larger buffer, permutations). LOOM_HD: both compilers build it.
#pragma once

#include <cstdint>

#include "engine/host_device.h"
#include "engine/tensor.h"

namespace loom {

template <class T>
struct SequenceRows {
  const T* data;
  int64_t s0, s1, s2;
  // The row of features at sequence position l, batch item b, head h.
  LOOM_HD const T* at(int64_t l, int64_t b, int64_t h) const { return data + l * s0 + b * s1 + h * s2; }
};

template <class T>
SequenceRows<T> rows_of(const Tensor& t) {
  return {t.data<T>(), t.strides()[0], t.strides()[1], t.strides()[2]};
}

}  // namespace loom
