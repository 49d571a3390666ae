// attention.cpp: backward rule of fused attention.
//
// The backward kernel rebuilds the probabilities from q, k and the saved row
// logsumexps, and the dropout mask from the recorded Philox seed and offset
// (engine/cpu/attention.cpp has the formulas). It fills all three gradients in
// one pass; a gradient nobody asked for is dropped by the walker.
#include "autodiff/rules.h"
#include "engine/backend.h"
#include "engine/ops.h"

namespace loom::autodiff {

namespace {

using Grads = std::vector<Tensor>;

// Like the forward, the kernel needs unit stride along the features only.
Tensor unit_last_stride(const Tensor& t) {
  return t.numel() == 0 || t.strides().back() == 1 || t.size(-1) == 1 ? t : contiguous(t);
}

// inputs {q, k, v}, saved {lse}, ints {causal, seed, offset}, reals {scale, p}.
Grads attention_rule(const Node& n, const Tensor& g) {
  const Tensor q = unit_last_stride(n.input(0)), k = unit_last_stride(n.input(1)), v = unit_last_stride(n.input(2));
  Backend::AttentionArgs args;
  args.causal = n.ints[0] != 0;
  args.seed = static_cast<uint64_t>(n.ints[1]);
  args.offset = static_cast<uint64_t>(n.ints[2]);
  args.scale = n.reals[0];
  args.dropout_p = n.reals[1];
  Tensor gq = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor gk = Tensor::empty(k.shape(), k.dtype(), k.device());
  Tensor gv = Tensor::empty(v.shape(), v.dtype(), v.device());
  backend_for(g).attention_backward(unit_last_stride(g), q, k, v, n.saved[0], args, gq, gk, gv);
  return {gq, gk, gv};
}

}  // namespace

void register_attention_rules(RuleTable& t) { t[int(OpId::attention)] = Rule{attention_rule, true, false}; }

}  // namespace loom::autodiff
