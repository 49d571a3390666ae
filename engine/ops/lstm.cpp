// lstm.cpp: the LSTM recurrence, fused over time (engine/ops.h).
//
// The caller computes the input half of every gate for all steps at once,
// gates_x = x W_ihᵀ + b_ih + b_hh (one large product, no recurrence in it); this
// op runs what is left, the recurrence through W_hh, in one kernel call per
// direction instead of a dozen recorded ops per step.
//
// What the backward keeps, and why:
//   - the activated gates [L, B, 4H]: every gate's derivative is a function of
//     its value (σ' = σ(1 − σ), tanh' = 1 − tanh²), so the backward needs no σ
//     and no recomputed product;
//   - c_t [L, B, H]: the forget gate's gradient reads c_{t−1}, and tanh(c_t)
//     is recomputed from c_t (the cell state cannot be run backwards: f may be 0);
//   - h, the output (kept by the record): dW_hh = Σ dG_tᵀ h_{t−1};
//   - weight_hh (dense): dh_{t−1} = dG_t W_hh.
// gates_x itself is not kept: its gradient is dG_t, read off the kept gates.
#include "engine/kernels/lstm.h"
#include "engine/ops/op_helpers.h"

namespace loom {

namespace {

const char* const kOp = "lstm";

}  // namespace

Tensor lstm(const Tensor& gates_x, const Tensor& weight_hh) {
  detail::check_defined(kOp, gates_x, "gates_x");
  detail::check_float(kOp, gates_x);
  LOOM_CHECK(gates_x.dim() == 3, kOp, ": gates_x must be [L, B, 4H], got shape ", shape_str(gates_x.shape()));
  detail::check_operand_like(kOp, weight_hh, "weight_hh", gates_x, "gates_x", 2, "[4H, H]");
  const int64_t H = weight_hh.size(1), L = gates_x.size(0), B = gates_x.size(1);
  LOOM_CHECK(weight_hh.size(0) == 4 * H, kOp, ": weight_hh ", shape_str(weight_hh.shape()), " must be [4H, H] (expected ",
             shape_str({4 * H, H}), ")");
  LOOM_CHECK(gates_x.size(2) == 4 * H, kOp, ": gates_x ", shape_str(gates_x.shape()), " does not match weight_hh ",
             shape_str(weight_hh.shape()), " (expected ", shape_str({L, B, 4 * H}), ")");

  const bool grad = needs_grad({&gates_x, &weight_hh});
  const Tensor gx = dense(gates_x), w = dense(weight_hh);
  Tensor h = Tensor::empty({L, B, H}, gates_x.dtype(), gates_x.device());
  Tensor cell = Tensor::empty({L, B, H}, gates_x.dtype(), gates_x.device());
  Tensor gates = grad ? Tensor::empty({L, B, 4 * H}, gates_x.dtype(), gates_x.device()) : Tensor();
  backend_for(gates_x).lstm({.gates_x = gx, .weight_hh = w, .h = h, .cell = cell, .gates = gates});
  if (grad) record({OpId::lstm, {gates_x, weight_hh}, {w, cell, gates}}, h);
  return h;
}

// ---- backward rule -------------------------------------------------------------------
//
// One kernel sweeps time in reverse (the formulas are in engine/kernels/lstm.h) and
// writes dL/dgates_x for every step, then dL/dW_hh in one product over all steps.

namespace {

// inputs = {gates_x, weight_hh} (not kept), output h (kept), saved = {weight_hh (dense), cell, gates}.
Grads lstm_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor &w = n.saved[0], &cell = n.saved[1], &gates = n.saved[2];
  // dL/dgates_x is the kernel's working memory for the sweep: always computed.
  Tensor grad_gates_x = Tensor::empty(gates.shape(), gates.dtype(), gates.device());
  Tensor grad_w = n.needs_input_grad(1) ? Tensor::empty(w.shape(), w.dtype(), w.device()) : Tensor();
  backend_for(w).lstm_backward({.grad_h = contiguous(g), .weight_hh = w, .h = contiguous(n.output), .cell = cell,
                                .gates = gates, .grad_gates_x = grad_gates_x, .grad_weight_hh = grad_w});
  return {n.needs_input_grad(0) ? grad_gates_x : Tensor(), grad_w};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration lstm_rules[] = {
    {OpId::lstm, {lstm_rule, false, true}},
};
}  // namespace

}  // namespace loom
