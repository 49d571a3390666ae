// delta_lstm.cpp: the recurrent part of the Delta LSTM, fused over time.
//
// Per batch item and head, three gates g (0 input i, 1 update u, 2 output o),
// each with a recurrent fast weight R_g [D, D] that the delta rule writes with
// softmax-normalised keys rk_g and values rv_g at rate gamma_g, and that reads
// s_t = softmax(h_{t-1}):
//   R_g += gamma_g (rv_g - R_g rk_g) rk_gᵀ;   a_g = z_g + R_g s_t
//   i = σ(a_0), u = a_1, o = σ(a_2);   c_t = i u + (1 - i) c_{t-1};   h_t = o c_t
// One kernel walks the whole sequence per (b, h), with the three R_g in a private
// buffer; no per-step R is stored. For the backward the op saves:
//   vbar [L, B, H, 3, D]  R_g,t-1 rk_g,t: the delta update's correction, which the
//                         backward needs to rebuild R_g,t-1 = R_g,t - gamma (rv - vbar) rkᵀ
//                         with the forward's own bits (and for dgamma);
//   cell [L, B, H, D]     c_t: the cell state feeds the next step and cannot be
//                         rebuilt backwards (the forget gate 1 - i may be 0);
//   R_L [B, H, 3, D, D]   the final fast weights, from which the backward starts;
//   initial_h, initial_c  (when given) the states before step 1.
// h_t is the op's output, kept by the record. The gates are recomputed in the
// backward from the rebuilt R_g,t and h_{t-1}. Records inputs {z, rk, rv, gamma};
// the initial states are not inputs of the record, so no gradient flows to them.
#include "engine/ops/op_helpers.h"

#include "engine/kernels/delta_lstm.h"

namespace loom {

namespace {

const char* const kOp = "delta_lstm";

// t has the same dtype and device as z, and `dims` axes.
void check_operand(const Tensor& t, const char* what, const Tensor& z, int64_t dims, const char* layout) {
  detail::check_operand_like(kOp, t, what, z, "z", dims, layout);
}

// t (when defined) has exactly `expected`, the shape z implies.
void check_state(const Tensor& t, const char* what, const Tensor& z, const Shape& expected, const char* layout) {
  if (!t.defined()) return;
  check_operand(t, what, z, static_cast<int64_t>(expected.size()), layout);
  LOOM_CHECK(t.shape() == expected, kOp, ": ", what, " ", shape_str(t.shape()), " does not match z ",
             shape_str(z.shape()), " (expected ", shape_str(expected), ")");
}

}  // namespace

Tensor delta_lstm(const Tensor& z, const Tensor& rk, const Tensor& rv, const Tensor& gamma,
                  const Tensor& initial_R, const Tensor& initial_h, const Tensor& initial_c, Tensor* final_R,
                  Tensor* final_h, Tensor* final_c) {
  detail::check_defined(kOp, z, "z");
  detail::check_float(kOp, z);
  check_operand(z, "z", z, 5, "[L, B, H, 3, D]");
  LOOM_CHECK(z.size(3) == 3, kOp, ": z ", shape_str(z.shape()),
             " must be [L, B, H, 3, D]: axis 3 holds the three gates (input, update, output), got ", z.size(3));
  const int64_t L = z.size(0), B = z.size(1), H = z.size(2), D = z.size(4);
  for (auto [t, what] : {std::pair{&rk, "rk"}, std::pair{&rv, "rv"}}) {
    check_operand(*t, what, z, 5, "[L, B, H, 3, D]");
    LOOM_CHECK(t->shape() == z.shape(), kOp, ": ", what, " ", shape_str(t->shape()), " and z ",
               shape_str(z.shape()), " must have the same shape [L, B, H, 3, D]");
  }
  check_operand(gamma, "gamma", z, 5, "[L, B, H, 3, 1]");
  LOOM_CHECK(gamma.shape() == (Shape{L, B, H, 3, 1}), kOp, ": gamma ", shape_str(gamma.shape()), " does not match z ",
             shape_str(z.shape()), " (expected ", shape_str({L, B, H, 3, 1}), ")");
  check_state(initial_R, "initial_R", z, {B, H, 3, D, D}, "[B, H, 3, D, D]");
  check_state(initial_h, "initial_h", z, {B, H, D}, "[B, H, D]");
  check_state(initial_c, "initial_c", z, {B, H, D}, "[B, H, D]");

  const bool grad = needs_grad({&z, &rk, &rv, &gamma});
  auto empty = [&](const Shape& s) { return Tensor::empty(s, z.dtype(), z.device()); };
  Tensor h = empty({L, B, H, D});
  // R_L is needed by the caller (final_R) or by the backward, which starts from it.
  Tensor last_R = final_R || grad ? empty({B, H, 3, D, D}) : Tensor();
  Tensor cell = grad ? empty({L, B, H, D}) : Tensor();
  Tensor vbar = grad ? empty({L, B, H, 3, D}) : Tensor();
  Tensor last_h = final_h ? empty({B, H, D}) : Tensor();
  Tensor last_c = final_c ? empty({B, H, D}) : Tensor();
  // Detached: the record keeps them as plain data (no gradient flows to the initial states).
  const Tensor h0 = initial_h.defined() ? dense(initial_h).detach() : Tensor();
  const Tensor c0 = initial_c.defined() ? dense(initial_c).detach() : Tensor();
  backend_for(z).delta_lstm({.z = dense(z), .rk = dense(rk), .rv = dense(rv), .gamma = dense(gamma),
                            .initial_R = dense(initial_R), .initial_h = h0, .initial_c = c0, .out = h,
                            .cell = cell, .vbar = vbar, .final_R = last_R, .final_h = last_h, .final_c = last_c});
  if (final_R) *final_R = last_R;
  if (final_h) *final_h = last_h;
  if (final_c) *final_c = last_c;
  if (grad) record({OpId::delta_lstm, {z, rk, rv, gamma}, {vbar, cell, last_R, h0, c0}}, h);
  return h;
}

// ---- backward rules ----------------------------------------------------------------
//
// One fused kernel sweeps time in reverse, rebuilding R_g,t-1 = R_g,t - gamma (rv - vbar) rkᵀ
// from the saved R_L, and writes dz, drk, drv and dgamma for every step (the formulas
// are in engine/kernels/delta_lstm.h). No gradient flows to the initial states.

namespace {

// inputs = {z, rk, rv, gamma}, output = h, saved = {vbar, cell, R_L, initial_h, initial_c}.
Grads delta_lstm_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor z = contiguous(n.input(0)), rk = contiguous(n.input(1)), rv = contiguous(n.input(2)),
               gamma = contiguous(n.input(3));
  // The kernel writes every gradient in one sweep: all are allocated, the unneeded dropped.
  auto like = [&](const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); };
  Tensor gz = like(z), grk = like(rk), grv = like(rv), ggamma = like(gamma);
  backend_for(z).delta_lstm_backward({.grad_out = contiguous(g), .z = z, .rk = rk, .rv = rv, .gamma = gamma,
                                      .initial_h = n.saved[3], .initial_c = n.saved[4], .out = n.output,
                                      .cell = n.saved[1], .vbar = n.saved[0], .final_R = n.saved[2], .grad_z = gz,
                                      .grad_rk = grk, .grad_rv = grv, .grad_gamma = ggamma});
  auto keep = [&](size_t i, const Tensor& t) { return n.needs_input_grad(i) ? t : Tensor(); };
  return {keep(0, gz), keep(1, grk), keep(2, grv), keep(3, ggamma)};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration delta_lstm_rules[] = {
    {OpId::delta_lstm, {delta_lstm_rule, true, true}},
};
}  // namespace

}  // namespace loom
