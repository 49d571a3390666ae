// feedback.cpp: the backward rule of feedback_attention.
//
// The backend's fused backward kernel recomputes the probabilities from the
// saved log-sum-exp and produces every input's gradient in one pass over the
// memory (engine/cpu/feedback.cpp has the formulas). The gradients of the
// position tables cover all R rows (rows the step did not read get zero), so the
// walker adds them like any other gradient.
//
// feedback_memory_append records itself as a concat, whose rule lives in shape.cpp.
#include "autodiff/rules.h"
#include "engine/backend.h"
#include "engine/ops.h"

namespace loom::autodiff {

namespace {

using Grads = std::vector<Tensor>;

// The layouts the kernel reads: contiguous, except keys/values which only need a
// unit stride on the last axis (the model passes prefix views of its memory).
Tensor unit_last_stride(const Tensor& t) { return t.size(-1) <= 1 || t.strides().back() == 1 ? t : contiguous(t); }

// inputs {q, keys, values, P, s, u}; saved {lse}; reals {scale}.
Grads feedback_attention_rule(const Node& n, const Tensor& g) {
  const Tensor q = contiguous(n.input(0));
  const Tensor keys = unit_last_stride(n.input(1));
  const Tensor values = unit_last_stride(n.input(2));
  const Tensor P = contiguous(n.input(3)), s = contiguous(n.input(4)), u = contiguous(n.input(5));
  auto overwritten = [&](size_t i, const Tensor& like) {
    return n.needs_input_grad(i) ? Tensor::empty(like.shape(), like.dtype(), like.device()) : Tensor();
  };
  auto accumulated = [&](size_t i, const Tensor& like) {
    return n.needs_input_grad(i) ? Tensor::zeros(like.shape(), like.dtype(), like.device()) : Tensor();
  };
  Grads grads{overwritten(0, q),     overwritten(1, keys),   overwritten(2, values),
              accumulated(3, P),     accumulated(4, s),      accumulated(5, u)};
  backend_for(q).feedback_attention_backward(contiguous(g), q, keys, values, P, s, u, n.output, n.saved[0],
                                             n.reals[0], grads[0], grads[1], grads[2], grads[3], grads[4],
                                             grads[5]);
  return grads;
}

}  // namespace

void register_feedback_rules(RuleTable& t) {
  t[int(OpId::feedback_attention)] = Rule{feedback_attention_rule, /*inputs=*/true, /*output=*/true};
}

}  // namespace loom::autodiff
