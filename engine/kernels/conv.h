// conv.h: the kernel spec of causal_conv1d (engine/ops/conv.cpp): how the
// kernels of both backends (engine/cpu/conv.cpp, cuda/conv.cu) see their
// operands.
//
// x [L, ..., C] is read as [L, B, C] with the middle axes folded into B; the
// weight is [C, K] (a kernel per channel) or [1, K] (one kernel shared by all
// channels), the bias [C] or [1] (ConvDims, engine/backend.h).
#pragma once

#include <cstdint>

#include "engine/backend.h"
#include "engine/dtype.h"
#include "engine/tensor.h"

namespace loom::kernels {

// A kernel's operands, dense, typed by x's dtype. An optional operand that is
// not given (the bias, a gradient nobody asked for) is a null pointer.
template <class T>
struct ConvForward {
  using Value = T;
  const T *x, *weight, *bias;
  T* out;
  ConvDims d;
};

template <class T>
struct ConvBackward {
  using Value = T;
  const T *grad_out, *x, *weight;
  T *grad_x, *grad_weight, *grad_bias;
  ConvDims d;
};

// What the entries of both backends share: the operands made dense, their
// sizes read, their pointers typed; `run` is the backend's loops or launches.
template <class Run>
void with_conv_forward(const Tensor& x_in, const Tensor& weight_in, const Tensor& bias_in, const Tensor& out,
                       Run&& run) {
  const Tensor x = dense(x_in), weight = dense(weight_in), bias = dense(bias_in);
  dispatch_float(x.dtype(), "causal_conv1d", [&](auto zero) {
    using T = decltype(zero);
    run(ConvForward<T>{x.data<T>(), weight.data<T>(), data_or_null<const T>(bias), out.data<T>(),
                       conv_dims(x, weight)});
  });
}

template <class Run>
void with_conv_backward(const Tensor& grad_out_in, const Tensor& x_in, const Tensor& weight_in,
                        const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias, Run&& run) {
  const Tensor g = dense(grad_out_in), x = dense(x_in), weight = dense(weight_in);
  dispatch_float(x.dtype(), "causal_conv1d_backward", [&](auto zero) {
    using T = decltype(zero);
    run(ConvBackward<T>{g.data<T>(), x.data<T>(), weight.data<T>(), data_or_null<T>(grad_x),
                        data_or_null<T>(grad_weight), data_or_null<T>(grad_bias), conv_dims(x, weight)});
  });
}

}  // namespace loom::kernels
