// feedback_layout.h: how the feedback_attention kernels of both backends
// (engine/cpu/feedback.cpp, cuda/feedback.cu) index their operands.
//
// keys and values are [n, B, H, *] memory tensors read through their strides
// (SequenceRows: unit stride on the last axis); q [B, H, D], P [R, H, D],
// s [R, H] and u [H, D] are contiguous. Slot j of the memory uses row R − n + j of the
// position tables (the last row is distance 1). The accessors are LOOM_HD, so
// both compilers build the same indexing.
#pragma once

#include <cstdint>

#include "engine/host_device.h"
#include "engine/sequence_rows.h"
#include "engine/tensor.h"

namespace loom::feedback {

// The inputs of one call, as raw pointers.
template <class T>
struct Inputs {
  int64_t n, B, H, D, Dv, R;
  const T *q, *P, *s, *u;
  SequenceRows<T> k, v;  // the memory: keys and values [n, B, H, *]
  T scale;

  LOOM_HD const T* q_row(int64_t b, int64_t h) const { return q + (b * H + h) * D; }
  LOOM_HD const T* P_row(int64_t j, int64_t h) const { return P + ((R - n + j) * H + h) * D; }
  LOOM_HD T s_at(int64_t j, int64_t h) const { return s[(R - n + j) * H + h]; }
};

template <class T>
Inputs<T> inputs_of(const Tensor& q, const Tensor& keys, const Tensor& values, const Tensor& P, const Tensor& s,
                    const Tensor& u, double scale) {
  return {keys.size(0), q.size(0), q.size(1), q.size(2), values.size(3), P.size(0), q.data<T>(), P.data<T>(),
          s.data<T>(), u.data<T>(), rows_of<T>(keys), rows_of<T>(values), static_cast<T>(scale)};
}

}  // namespace loom::feedback
