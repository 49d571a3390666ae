// delta_rule.cpp: the fast-weight recurrence (delta rule, or the sum rule of
// linear transformers), fused over time.
//
// Per batch item and head, with W [Dv, Dk] starting at initial_state or 0:
//   delta: vbar_t = W k_t;  u_t = beta_t (v_t - vbar_t);  W += u_t k_tᵀ;  y_t = W q_t
//   sum:   u_t = v_t;                                      W += u_t k_tᵀ;  y_t = W q_t
// One kernel walks the whole sequence, so W never leaves the cache and no
// per-step W is stored. For the backward the op saves only vbar [L, B, H, Dv]
// (delta rule) and the final W [B, H, Dv, Dk]: the backward kernel rebuilds each
// W_{t-1} = W_t - u_t k_tᵀ on its way back (models/FAMILIES.md §2.5). Records inputs
// {q, k, v, beta} and saved {vbar or undefined, W_L}; initial_state is not an
// input of the record, so no gradient flows to it.
#include "engine/ops/op_helpers.h"

#include "engine/kernels/delta_rule.h"

namespace loom {

namespace {

const char* const kOp = "delta_rule";

// t has the same dtype and device as q, and `dims` axes.
void check_operand(const Tensor& t, const char* what, const Tensor& q, int64_t dims, const char* layout) {
  detail::check_operand_like(kOp, t, what, q, "q", dims, layout);
}

}  // namespace

Tensor delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta,
                  const Tensor& initial_state, Tensor* final_state) {
  detail::check_float(kOp, q);
  check_operand(q, "q", q, 4, "[L, B, H, Dk]");
  check_operand(k, "k", q, 4, "[L, B, H, Dk]");
  check_operand(v, "v", q, 4, "[L, B, H, Dv]");
  LOOM_CHECK(k.shape() == q.shape(), kOp, ": k ", shape_str(k.shape()), " and q ", shape_str(q.shape()),
             " must have the same shape [L, B, H, Dk]");
  const int64_t L = q.size(0), B = q.size(1), H = q.size(2), Dk = q.size(3), Dv = v.size(3);
  LOOM_CHECK(v.size(0) == L && v.size(1) == B && v.size(2) == H, kOp, ": v ", shape_str(v.shape()),
             " does not match q ", shape_str(q.shape()), " in [L, B, H] (expected [", L, ", ", B, ", ", H, ", Dv])");
  if (beta.defined()) {
    check_operand(beta, "beta", q, 4, "[L, B, H, 1]");
    LOOM_CHECK(beta.shape() == (Shape{L, B, H, 1}), kOp, ": beta ", shape_str(beta.shape()),
               " does not match q ", shape_str(q.shape()), " (expected [", L, ", ", B, ", ", H, ", 1])");
  }
  if (initial_state.defined()) {
    check_operand(initial_state, "initial_state", q, 4, "[B, H, Dv, Dk]");
    LOOM_CHECK(initial_state.shape() == (Shape{B, H, Dv, Dk}), kOp, ": initial_state ",
               shape_str(initial_state.shape()), " does not match q ", shape_str(q.shape()), " and v ",
               shape_str(v.shape()), " (expected [", B, ", ", H, ", ", Dv, ", ", Dk, "])");
  }

  const bool grad = needs_grad({&q, &k, &v, &beta});
  const bool delta = beta.defined();
  Tensor y = Tensor::empty({L, B, H, Dv}, q.dtype(), q.device());
  // W_L is needed by the caller (final_state) or by the backward, which starts from it.
  Tensor last = final_state || grad ? Tensor::empty({B, H, Dv, Dk}, q.dtype(), q.device()) : Tensor();
  Tensor vbar = grad && delta ? Tensor::empty({L, B, H, Dv}, q.dtype(), q.device()) : Tensor();
  backend_for(q).delta_rule({.q = dense(q), .k = dense(k), .v = dense(v), .beta = dense(beta),
                           .initial_state = dense(initial_state), .out = y, .final_state = last, .vbar = vbar});
  if (final_state) *final_state = last;
  if (grad) record({OpId::delta_rule, {q, k, v, beta}, {vbar, last}}, y);
  return y;
}

// ---- backward rules ----------------------------------------------------------------
//
// The backward rule of the fast-weight recurrence.
//
// One fused kernel sweeps time in reverse, rebuilding W_{t-1} = W_t - u_t k_tᵀ
// from the saved final state, and writes dq, dk, dv and dbeta (delta rule) for
// every step (the formulas are in engine/kernels/delta_rule.h). No gradient flows
// to the initial state: it is not an input of the record.

namespace {

// inputs = {q, k, v, beta (undefined: sum rule)}, saved = {vbar (delta rule), W_L}.
Grads delta_rule_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor q = contiguous(n.input(0)), k = contiguous(n.input(1)), v = contiguous(n.input(2));
  const Tensor& beta_in = n.input(3);
  const Tensor beta = beta_in.defined() ? contiguous(beta_in) : Tensor();
  // The kernel writes every gradient in one sweep: all are allocated, the unneeded dropped.
  auto like = [&](const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); };
  Tensor gq = like(q), gk = like(k), gv = like(v), gbeta = beta.defined() ? like(beta) : Tensor();
  backend_for(q).delta_rule_backward({.grad_out = contiguous(g), .q = q, .k = k, .v = v, .beta = beta, .vbar = n.saved[0],
                                      .final_state = n.saved[1], .grad_q = gq, .grad_k = gk, .grad_v = gv,
                                      .grad_beta = gbeta});
  auto keep = [&](size_t i, const Tensor& t) { return n.needs_input_grad(i) ? t : Tensor(); };
  return {keep(0, gq), keep(1, gk), keep(2, gv), keep(3, gbeta)};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration delta_rule_rules[] = {
    {OpId::delta_rule, {delta_rule_rule, true, false}},
};
}  // namespace

}  // namespace loom
