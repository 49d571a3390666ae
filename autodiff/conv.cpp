// conv.cpp: backward rule of the depth-wise causal convolution.
//
// One fused kernel computes whichever of grad_x, grad_weight and grad_bias are
// needed (see engine/cpu/conv.cpp for the formulas).
#include "autodiff/rules.h"
#include "engine/backend.h"
#include "engine/ops.h"

namespace loom::autodiff {

namespace {

using Grads = std::vector<Tensor>;

Grads causal_conv1d_rule(const Node& n, const Tensor& g) {
  const Tensor x = contiguous(n.input(0)), weight = contiguous(n.input(1));
  auto grad_for = [&](size_t i) {
    return n.needs_input_grad(i) ? Tensor::empty(n.edges[i].shape, g.dtype(), g.device()) : Tensor();
  };
  Tensor gx = grad_for(0), gw = grad_for(1), gb = grad_for(2);
  backend_for(g).causal_conv1d_backward(contiguous(g), x, weight, gx, gw, gb);
  return {gx, gw, gb};
}

}  // namespace

void register_conv_rules(RuleTable& t) { t[int(OpId::causal_conv1d)] = Rule{causal_conv1d_rule, true, false}; }

}  // namespace loom::autodiff
