// norm.cpp: layer_norm over the last axis.
//
// The fused kernel saves each row's mean and 1/std ([rows], in x's dtype) for
// the backward, which then needs neither a second pass for the statistics nor
// the normalised output. Records reals = {eps} and saved = {mean, rstd}.
#include "engine/ops/op_helpers.h"

namespace loom {

namespace {

// weight / bias, when given, must be [D] with x's dtype and device.
void check_affine(const Tensor& t, const char* what, const Tensor& x) {
  if (!t.defined()) return;
  const int64_t D = x.size(-1);
  LOOM_CHECK(t.dtype() == x.dtype(), "layer_norm: ", what, " ", t.describe(), " does not match the dtype of x ",
             x.describe());
  LOOM_CHECK(t.device() == x.device(), "layer_norm: ", what, " ", t.describe(), " is not on the device of x ",
             x.describe());
  LOOM_CHECK(t.dim() == 1 && t.size(0) == D, "layer_norm: ", what, " has shape ", shape_str(t.shape()),
             ", expected [", D, "] (the last axis of x of shape ", shape_str(x.shape()), ")");
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  detail::check_float("layer_norm", x);
  LOOM_CHECK(x.dim() >= 1, "layer_norm: x must have at least one axis, got shape ", shape_str(x.shape()));
  LOOM_CHECK(eps >= 0, "layer_norm: eps must be >= 0, got ", eps);
  check_affine(weight, "weight", x);
  check_affine(bias, "bias", x);

  const int64_t D = x.size(-1);
  const int64_t rows = D == 0 ? 0 : x.numel() / D;
  const Tensor xc = dense(x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({rows}, x.dtype(), x.device());
  Tensor rstd = Tensor::empty({rows}, x.dtype(), x.device());
  backend_for(x).layer_norm(xc, weight, bias, eps, out, mean, rstd);
  if (needs_grad({&x, &weight, &bias})) record({OpId::layer_norm, {x, weight, bias}, {mean, rstd}, {}, {eps}}, out);
  return out;
}

// ---- backward rules ----------------------------------------------------------------
//
// The backward rule of layer_norm.
//
// With xhat = (x - mean) * rstd and gxhat = g * weight, row by row:
//   dx      = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))
//   dweight = sum over rows of g * xhat
//   dbias   = sum over rows of g
// all three from one fused kernel, using the mean and rstd the forward saved.

namespace {

// inputs = {x, weight, bias} (weight and bias may be undefined), saved = {mean, rstd}.
std::vector<Tensor> layer_norm_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor x = contiguous(n.input(0));
  const Tensor& weight = n.input(1);
  const int64_t D = x.size(-1);
  auto grad_if = [&](size_t i, const Shape& shape) {
    return n.needs_input_grad(i) ? Tensor::empty(shape, x.dtype(), x.device()) : Tensor();
  };
  Tensor gx = grad_if(0, x.shape()), gw = grad_if(1, {D}), gb = grad_if(2, {D});
  backend_for(x).layer_norm_backward(contiguous(g), x, weight, n.saved[0], n.saved[1], gx, gw, gb);
  return {gx, gw, gb};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration norm_rules[] = {
    {OpId::layer_norm, {layer_norm_rule, true, false}},
};
}  // namespace

}  // namespace loom
