// norm.h: the kernel spec of layer_norm (engine/ops/norm.cpp): how the kernels
// of both backends (engine/cpu/norm.cpp, cuda/norm.cu) see their operands.
//
// x is contiguous, viewed as [rows, D], and each row is normalised on its own:
//   mean = sum(x) / D,  var = sum((x - mean)^2) / D,  rstd = 1 / sqrt(var + eps)
//   xhat = (x - mean) * rstd,  y = xhat * weight + bias
// mean and rstd [rows] are kept for the backward.
#pragma once

#include <cstdint>

#include "engine/backend.h"
#include "engine/dtype.h"
#include "engine/tensor.h"

namespace loom::kernels {

// Rows of length D in x (x may be empty, D may be 0).
inline int64_t layer_norm_rows(const Tensor& x, int64_t D) { return D == 0 ? 0 : x.numel() / D; }

// A kernel's operands typed by x's dtype. An optional operand that is not given
// (weight, bias, a gradient nobody asked for) is a null pointer.
template <class T>
struct LayerNormForward {
  using Value = T;
  const T *x, *weight, *bias;
  double eps;
  T *out, *mean, *rstd;
  int64_t rows, D;
};

template <class T>
struct LayerNormBackward {
  using Value = T;
  const T *grad_out, *x, *weight, *mean, *rstd;
  T *grad_x, *grad_weight, *grad_bias;
  int64_t rows, D;
};

// What the entries of both backends share: the sizes read and the pointers
// typed; `run` is the backend's loops or launches.
template <class Run>
void with_layer_norm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& out,
                             const Tensor& mean, const Tensor& rstd, Run&& run) {
  dispatch_float(x.dtype(), "layer_norm", [&](auto zero) {
    using T = decltype(zero);
    const int64_t D = x.size(-1);
    run(LayerNormForward<T>{x.data<T>(), data_or_null<const T>(weight), data_or_null<const T>(bias), eps,
                            out.data<T>(), mean.data<T>(), rstd.data<T>(), layer_norm_rows(x, D), D});
  });
}

template <class Run>
void with_layer_norm_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Tensor& mean,
                              const Tensor& rstd, const Tensor& grad_x, const Tensor& grad_weight,
                              const Tensor& grad_bias, Run&& run) {
  dispatch_float(x.dtype(), "layer_norm_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t D = x.size(-1);
    run(LayerNormBackward<T>{grad_out.data<T>(), x.data<T>(), data_or_null<const T>(weight), mean.data<T>(),
                             rstd.data<T>(), data_or_null<T>(grad_x), data_or_null<T>(grad_weight),
                             data_or_null<T>(grad_bias), layer_norm_rows(x, D), D});
  });
}

}  // namespace loom::kernels
