// sum_normalise.h: the kernel spec of the sum normalisation of the fast
// weights' feature maps (engine/ops/sum_normalise.cpp), read by both backends
// (engine/cpu/sum_normalise.cpp, cuda/sum_normalise.cu).
//
// x is dense, viewed as [rows, n]. Each row is normalised on its own:
//   e_j   = x_j, or ELU(x_j) + 1 (the ELU+1 feature map)
//   den   = Σ_j e_j + eps
//   out_j = e_j / den
// e [rows, n] (when the map is ELU+1; otherwise it is x) and den [rows] are kept
// for the backward. With g the gradient of out:
//   ge_j  = g_j / den + gs,     gs = Σ_k -((g_k / den) · e_k) / den
//   gx_j  = ge_j                (no map)
//   gx_j  = ge_j · slope(e_j)   (ELU+1: the slope is 1 for x > 0 and e^x = e_j
//                                otherwise; below)
// These are the operations the composition `phi / (sum(phi, {-1}, true) + eps)`
// and its backward rules perform, one for one and in their order: the sums
// accumulate the row's entries one after another in double (the reduction
// kernel's order) and round once to x's dtype; eps is rounded to x's dtype
// first; ELU + 1 rounds the ELU and then the sum. So on the CPU the fused op has
// the composition's bits, forward and backward (tests/cases_sum_normalise.cpp
// compares them with memcmp).
#pragma once

#include <cstdint>

#include "engine/backend.h"
#include "engine/dtype.h"
#include "engine/elementwise_functors.h"
#include "engine/host_device.h"
#include "engine/tensor.h"

namespace loom::kernels {

// The kernels' operands, typed by x's dtype. `features` is where the forward
// writes e (ELU+1, for the backward), or null: then it writes e into out and
// divides in place. In the backward, `features` is e (x itself without a map).
template <class T>
struct SumNormaliseForward {
  using Value = T;
  const T* x;
  T *out, *features, *denominator;
  T eps;
  bool elu_plus_one;
  int64_t rows, n;
};

template <class T>
struct SumNormaliseBackward {
  using Value = T;
  const T *grad_out, *features, *denominator;
  T* grad_x;
  bool elu_plus_one;
  int64_t rows, n;
};

// e_j of one entry: ELU(x) + 1 rounds twice, as elu(x) + 1.0 did.
template <class T>
LOOM_HD T feature_of(T x, bool elu_plus_one) {
  return elu_plus_one ? fn::Elu{}(x, T(1)) + T(1) : x;
}

// d e / d x from e alone. elu's rule multiplies by 1 where x > 0 and by
// elu(x) + 1 = e elsewhere. x > 0 gives e = x + 1 >= 1 and x <= 0 gives
// e = e^x <= 1 (NaN stays NaN), so e > 1 picks the first case and e < 1 the
// second; at e = 1 both factors are 1.
template <class T>
LOOM_HD T elu_plus_one_slope(T e) {
  return e > T(1) ? T(1) : e;
}

// Rows of n entries in x (x has at least one axis; n > 0, checked by the op).
inline int64_t sum_normalise_rows(const Tensor& x) { return x.numel() / x.shape().back(); }

// What the entries of both backends share: the sizes read, the pointers typed;
// `run` is the backend's loops or launch. x and every output are dense.
template <class Run>
void with_sum_normalise_forward(const Tensor& x, double eps, bool elu_plus_one, const Tensor& out,
                                const Tensor& features, const Tensor& denominator, Run&& run) {
  dispatch_float(x.dtype(), "sum_normalise", [&](auto zero) {
    using T = decltype(zero);
    run(SumNormaliseForward<T>{x.data<T>(), out.data<T>(), data_or_null<T>(features), denominator.data<T>(),
                               static_cast<T>(eps), elu_plus_one, sum_normalise_rows(x), x.shape().back()});
  });
}

template <class Run>
void with_sum_normalise_backward(const Tensor& grad_out, const Tensor& features, const Tensor& denominator,
                                 bool elu_plus_one, const Tensor& grad_x, Run&& run) {
  dispatch_float(features.dtype(), "sum_normalise_backward", [&](auto zero) {
    using T = decltype(zero);
    run(SumNormaliseBackward<T>{grad_out.data<T>(), features.data<T>(), denominator.data<T>(), grad_x.data<T>(),
                                elu_plus_one, sum_normalise_rows(features), features.shape().back()});
  });
}

}  // namespace loom::kernels
