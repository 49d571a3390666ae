// conv.cpp: the depth-wise causal 1-D convolution (Primer's MDHA convolution).
//
// out[t, .., c] = bias[c] + sum_k weight[c, k] * x[t-(K-1)+k, .., c], x[<0] = 0:
// each channel is convolved with its own K taps (or all with one shared kernel,
// weight [1, K]) along axis 0, and only current and earlier positions are read.
// The kernels take contiguous tensors; a strided x costs one copy here.
#include "engine/ops/op_helpers.h"

namespace loom {

Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const char* op = "causal_conv1d";
  detail::check_float(op, x);
  detail::check_defined(op, weight, "weight");
  detail::check_same(op, x, weight);
  LOOM_CHECK(x.dim() >= 2, op, ": x must be [L, ..., C] with at least 2 dims, got ", x.describe());
  LOOM_CHECK(weight.dim() == 2, op, ": weight must be 2-D [C, K] or [1, K], got ", weight.describe());
  const int64_t C = x.shape().back(), Cw = weight.shape()[0], K = weight.shape()[1];
  LOOM_CHECK(Cw == C || Cw == 1, op, ": weight ", shape_str(weight.shape()), " has ", Cw,
             " channels but x ", shape_str(x.shape()), " has C = ", C, " (expected weight [", C, ", K] or [1, K])");
  LOOM_CHECK(K >= 1, op, ": weight ", shape_str(weight.shape()), " has no taps (K = 0)");
  if (bias.defined()) {
    detail::check_same(op, x, bias);
    LOOM_CHECK(bias.shape() == Shape{Cw}, op, ": bias ", shape_str(bias.shape()), " does not match weight ",
               shape_str(weight.shape()), " (expected bias [", Cw, "])");
  }
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x).causal_conv1d(dense(x), dense(weight),
                               dense(bias), out);
  if (needs_grad({&x, &weight, &bias})) record({OpId::causal_conv1d, {x, weight, bias}}, out);
  return out;
}

// ---- backward rules ----------------------------------------------------------------
//
// Backward rule of the depth-wise causal convolution.
//
// One fused kernel computes whichever of grad_x, grad_weight and grad_bias are
// needed (see engine/cpu/conv.cpp for the formulas).

namespace {

Grads causal_conv1d_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor x = contiguous(n.input(0)), weight = contiguous(n.input(1));
  auto grad_for = [&](size_t i) {
    return n.needs_input_grad(i) ? Tensor::empty(n.input_shapes[i], g.dtype(), g.device()) : Tensor();
  };
  Tensor gx = grad_for(0), gw = grad_for(1), gb = grad_for(2);
  backend_for(g).causal_conv1d_backward(contiguous(g), x, weight, gx, gw, gb);
  return {gx, gw, gb};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration conv_rules[] = {
    {OpId::causal_conv1d, {causal_conv1d_rule, true, false}},
};
}  // namespace

}  // namespace loom
