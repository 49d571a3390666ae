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

#include "engine/backend.h"
#include "engine/dtype.h"
#include "engine/host_device.h"
#include "engine/tensor.h"

namespace loom::kernels {

// A kernel's operands, dense, typed by x's dtype: x as [rows, n] (its last axis
// and the number of rows before it) and the output [rows, 2n·nu] (forward), or
// the upstream gradient [rows, 2n·nu] and x's gradient [rows, n] (backward).
template <class T>
struct DpfpForward {
  using Value = T;
  const T* x;
  T* out;
  int64_t rows, n, nu;
};

template <class T>
struct DpfpBackward {
  using Value = T;
  const T *grad_out, *x;
  T* grad_x;
  int64_t rows, n, nu;
};

inline int64_t dpfp_rows(const Tensor& x, int64_t n) { return n > 0 ? x.numel() / n : 0; }

// What the entries of both backends share: the operands made dense, their
// sizes read, their pointers typed; `run` is the backend's loops or launch.
template <class Run>
void with_dpfp_forward(const Tensor& x_in, int64_t nu, const Tensor& out, Run&& run) {
  const Tensor x = dense(x_in);
  dispatch_float(x.dtype(), "dpfp", [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = x.shape().back();
    run(DpfpForward<T>{x.data<T>(), out.data<T>(), dpfp_rows(x, n), n, nu});
  });
}

template <class Run>
void with_dpfp_backward(const Tensor& grad_out_in, const Tensor& x_in, int64_t nu, const Tensor& grad_x, Run&& run) {
  const Tensor g = dense(grad_out_in), x = dense(x_in);
  dispatch_float(x.dtype(), "dpfp_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = x.shape().back();
    run(DpfpBackward<T>{g.data<T>(), x.data<T>(), grad_x.data<T>(), dpfp_rows(x, n), n, nu});
  });
}

// r[k] = relu([x, -x])[k] of a row x of n entries, k < 2n (as the Relu functor).
template <class T>
LOOM_HD T relu_pair_at(const T* x, int64_t n, int64_t k) {
  const T v = k < n ? x[k] : -x[k - n];
  return v > T(0) ? v : T(0);
}

}  // namespace loom::kernels
