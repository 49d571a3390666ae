// sum_normalise.h: the kernel spec of the sum normalisation of the fast
// weights' feature maps (engine/ops/sum_normalise.cpp), read by both backends
// (engine/cpu/sum_normalise.cpp, cuda/sum_normalise.cu).
//
// x is viewed as [rows, n], read through its strides (unit stride on the last
// axis; LeadingAxes below), the outputs are dense. Each row is normalised on
// its own:
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

// Where row r of x [..., n] starts, x having unit stride on its last axis and
// any strides on the others (a window of a projection, for instance): the
// leading axes, size-1 axes dropped and neighbours merged where their strides
// allow, so that the windows of a projection have one leading axis.
struct LeadingAxes {
  static constexpr int kMax = 6;
  int count = 0;
  int64_t size[kMax] = {}, stride[kMax] = {};

  LOOM_HD int64_t offset(int64_t row) const {
    int64_t off = 0;
    for (int d = count - 1; d >= 0; --d) {
      off += (row % size[d]) * stride[d];
      row /= size[d];
    }
    return off;
  }
};

// x's leading axes, or false when x cannot be read in place (a last axis of
// stride other than 1, or more leading axes than LeadingAxes holds after merging).
inline bool leading_axes_of(const Tensor& x, LeadingAxes& axes) {
  if (x.dim() < 1 || (x.shape().back() > 1 && x.strides().back() != 1)) return false;
  axes = LeadingAxes{};
  for (int64_t d = 0; d + 1 < x.dim(); ++d) {
    const int64_t size = x.shape()[d], stride = x.strides()[d];
    if (size == 1) continue;
    if (axes.count > 0 && axes.stride[axes.count - 1] == size * stride) {  // merges with the axis before
      axes.size[axes.count - 1] *= size;
      axes.stride[axes.count - 1] = stride;
      continue;
    }
    if (axes.count == LeadingAxes::kMax) return false;
    axes.size[axes.count] = size;
    axes.stride[axes.count] = stride;
    ++axes.count;
  }
  return true;
}

// The kernels' operands, typed by x's dtype. `features` is where the forward
// writes e (ELU+1, for the backward), or null: then it writes e into out and
// divides in place. In the backward, `features` is e (x itself without a map).
template <class T>
struct SumNormaliseForward {
  using Value = T;
  const T* x;  // row r at x + rows_of_x.offset(r)
  LeadingAxes rows_of_x;
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
// `run` is the backend's loops or launch. x is read through its strides, or from
// a dense copy where leading_axes_of refuses it; every output is dense.
template <class Run>
void with_sum_normalise_forward(const Tensor& x_in, double eps, bool elu_plus_one, const Tensor& out,
                                const Tensor& features, const Tensor& denominator, Run&& run) {
  LeadingAxes rows_of_x;
  Tensor x = x_in;
  if (!leading_axes_of(x, rows_of_x)) {  // a last axis of stride other than 1, or too many leading axes
    x = dense(x_in);
    leading_axes_of(x, rows_of_x);  // dense: one leading axis
  }
  dispatch_float(x.dtype(), "sum_normalise", [&](auto zero) {
    using T = decltype(zero);
    run(SumNormaliseForward<T>{x.data<T>(), rows_of_x, out.data<T>(), data_or_null<T>(features),
                               denominator.data<T>(), static_cast<T>(eps), elu_plus_one, sum_normalise_rows(x),
                               x.shape().back()});
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
