// delta_rule.cpp: the backward rule of the fast-weight recurrence.
//
// One fused kernel sweeps time in reverse, rebuilding W_{t-1} = W_t - u_t k_tᵀ
// from the saved final state, and writes dq, dk, dv and dbeta (delta rule) for
// every step (the formulas are in engine/cpu/delta_rule.cpp). No gradient flows
// to the initial state: it is not an input of the record.
#include "autodiff/rules.h"
#include "engine/backend.h"
#include "engine/ops.h"

namespace loom::autodiff {

namespace {

using Grads = std::vector<Tensor>;

// inputs = {q, k, v, beta (undefined: sum rule)}, saved = {vbar (delta rule), W_L}.
Grads delta_rule_rule(const Node& n, const Tensor& g) {
  const Tensor q = contiguous(n.input(0)), k = contiguous(n.input(1)), v = contiguous(n.input(2));
  const Tensor& beta_in = n.input(3);
  const Tensor beta = beta_in.defined() ? contiguous(beta_in) : Tensor();
  // The kernel writes every gradient in one sweep: all are allocated, the unneeded dropped.
  auto like = [&](const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); };
  Tensor gq = like(q), gk = like(k), gv = like(v), gbeta = beta.defined() ? like(beta) : Tensor();
  backend_for(q).delta_rule_backward(contiguous(g), q, k, v, beta, n.saved[0], n.saved[1], gq, gk, gv, gbeta);
  auto keep = [&](size_t i, const Tensor& t) { return n.needs_input_grad(i) ? t : Tensor(); };
  return {keep(0, gq), keep(1, gk), keep(2, gv), keep(3, gbeta)};
}

}  // namespace

void register_delta_rule_rules(RuleTable& t) { t[int(OpId::delta_rule)] = Rule{delta_rule_rule, true, false}; }

}  // namespace loom::autodiff
