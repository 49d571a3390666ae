// dpfp.h: the kernel spec of the DPFP feature map (engine/ops/dpfp.cpp), read by
// both backends (engine/cpu/dpfp.cpp, cuda/dpfp.cu).
//
// x is [rows, n] (any leading axes merged) and r = relu([x, -x]) has 2n entries
// per row. Forward, block i (1 <= i <= nu < 2n) of a row's output:
//   out[(i-1)·2n + j] = r[j] · r[(j - i) mod 2n],  j < 2n.
// Backward, with g[i][j] the gradient of out[i][j]: r[j] appears in out[i][j]
// (times r[(j - i) mod 2n]) and in out[i][(j + i) mod 2n] (times r[(j + i) mod 2n]):
//   dr[j] = Σ_i g[i][j] · r[(j - i) mod 2n] + g[i][(j + i) mod 2n] · r[(j + i) mod 2n]
//   dx[c] = dr[c]·[x_c > 0] - dr[n + c]·[x_c < 0]       (relu of x and of -x)
// Both backends sum over i in order, the two terms of each i in the order
// written, in x's dtype.
#pragma once

#include <cstdint>

#include "engine/host_device.h"
#include "engine/tensor.h"

namespace loom::kernels {

// x as [rows, n]: its last axis and the number of rows before it.
struct DpfpRows {
  int64_t rows = 0, n = 0;
};

inline DpfpRows dpfp_rows(const Tensor& x) {
  const int64_t n = x.shape().back();
  return {n > 0 ? x.numel() / n : 0, n};
}

// r[k] = relu([x, -x])[k] of a row x of n entries, k < 2n (as the Relu functor).
template <class T>
LOOM_HD T relu_pair_at(const T* x, int64_t n, int64_t k) {
  const T v = k < n ? x[k] : -x[k - n];
  return v > T(0) ? v : T(0);
}

}  // namespace loom::kernels
