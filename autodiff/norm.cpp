// norm.cpp: the backward rule of layer_norm.
//
// With xhat = (x - mean) * rstd and gxhat = g * weight, row by row:
//   dx      = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))
//   dweight = sum over rows of g * xhat
//   dbias   = sum over rows of g
// all three from one fused kernel, using the mean and rstd the forward saved.
#include "autodiff/rules.h"
#include "engine/backend.h"
#include "engine/ops.h"

namespace loom::autodiff {

namespace {

// inputs = {x, weight, bias} (weight and bias may be undefined), saved = {mean, rstd}.
std::vector<Tensor> layer_norm_rule(const Node& n, const Tensor& g) {
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

}  // namespace

void register_norm_rules(RuleTable& t) { t[int(OpId::layer_norm)] = Rule{layer_norm_rule, true, false}; }

}  // namespace loom::autodiff
