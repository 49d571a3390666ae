// softmax.cpp: backward rules of softmax, log_softmax and cross_entropy.
//
// Each rule calls the backend's fused backward kernel, which works along the
// last axis of contiguous data, as the forward did:
//   softmax:       dx = y * (g - sum(g * y))
//   log_softmax:   dx = g - softmax(x) * sum(g),  softmax(x) = exp(y)
//   cross_entropy: dlogits = (softmax(logits) - onehot(targets)) * g / N
#include "autodiff/rules.h"
#include "engine/backend.h"
#include "engine/ops.h"

namespace loom::autodiff {

namespace {

using Grads = std::vector<Tensor>;

// ints = {axis}. The output was written with the axis innermost, so moving it
// last again makes y contiguous without a copy; only g may need one.
Grads softmax_rule(const Node& n, const Tensor& g) {
  const Tensor& y = n.output;
  const int64_t axis = n.ints[0];
  const bool last = axis == y.dim() - 1;
  auto axis_last = [&](const Tensor& t) {
    return contiguous(last ? t : permute(t, axis_last_permutation(t.dim(), axis)));
  };
  const Tensor y_rows = axis_last(y), g_rows = axis_last(g);
  Tensor gx = Tensor::empty(y_rows.shape(), y.dtype(), y.device());
  backend_for(y).softmax_backward(y_rows, g_rows, gx, n.op == OpId::log_softmax);
  return {last ? gx : permute(gx, inverse_permutation(axis_last_permutation(y.dim(), axis)))};
}

// g is the gradient of the mean loss: each row's loss gets g / N.
Grads cross_entropy_rule(const Node& n, const Tensor& g) {
  const Tensor logits = contiguous(n.input(0));
  const Tensor& targets = n.input(1);
  const int64_t N = logits.size(0);
  const Tensor grad_losses = expand(reshape(g, {1}), {N}) / static_cast<double>(N);
  Tensor gx = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  backend_for(logits).cross_entropy_backward(logits, targets, grad_losses, gx);
  return {gx, Tensor()};
}

}  // namespace

void register_softmax_rules(RuleTable& t) {
  t[int(OpId::softmax)] = Rule{softmax_rule, false, true};
  t[int(OpId::log_softmax)] = Rule{softmax_rule, false, true};
  t[int(OpId::cross_entropy)] = Rule{cross_entropy_rule, true, false};
}

}  // namespace loom::autodiff
