// delta_rnn.cpp: the recurrent part of the Delta RNN, fused over time.
//
// Per batch item and head, with R [D, D] starting at initial_R or 0 and y_0 at
// initial_y or 0 (Irie et al. 2021, eq. 12):
//   s_t    = softmax(y_{t-1})
//   vbar_t = R_{t-1} rk_t;  u_t = gamma_t (rv_t - vbar_t);  R_t = R_{t-1} + u_t rk_tᵀ
//   y_t    = z_t + R_t s_t
// It is the delta rule (delta_rule.cpp) with the query s_t taken from the op's
// own previous output. One kernel walks the whole sequence, so R never leaves
// the cache and no per-step R is stored.
//
// What the backward keeps, and why:
//   - y, the op's output (kept by the record, no extra memory): s_t needs
//     y_{t-1}, and y cannot be recomputed backwards (y_{t-1} needs s_{t-1}, which
//     needs y_{t-2}, ...); s_t itself is recomputed from it (O(D) per step).
//   - vbar [L, B, H, D]: the backward rebuilds R_{t-1} = R_t - u_t rk_tᵀ and needs
//     u_t for it, which needs vbar_t = R_{t-1} rk_t, the matrix it is about to
//     rebuild; solving for it from R_t is unstable where gamma |rk|² nears 1.
//   - R_L [B, H, D, D]: where the rebuilding starts.
//   - initial_y [B, H, D] (when given): s_1 = softmax(y_0).
//   - rk, rv, gamma (dense): the backward's inputs. z is not kept: dL/dz_t is
//     the gradient that reaches y_t.
// initial_R and initial_y are not inputs of the record: no gradient flows to them.
#include "engine/ops/op_helpers.h"

#include "engine/kernels/delta_rnn.h"

namespace loom {

namespace {

const char* const kOp = "delta_rnn";

// t has the same dtype and device as z, and `dims` axes.
void check_operand(const Tensor& t, const char* what, const Tensor& z, int64_t dims, const char* layout) {
  detail::check_operand_like(kOp, t, what, z, "z", dims, layout);
}

// t has exactly `expected`, or an error naming t, z and the expected shape.
void check_shape(const Tensor& t, const char* what, const Tensor& z, const Shape& expected) {
  LOOM_CHECK(t.shape() == expected, kOp, ": ", what, " ", shape_str(t.shape()), " does not match z ",
             shape_str(z.shape()), " (expected ", shape_str(expected), ")");
}

}  // namespace

Tensor delta_rnn(const Tensor& z, const Tensor& rk, const Tensor& rv, const Tensor& gamma, const Tensor& initial_R,
                 const Tensor& initial_y, Tensor* final_R, Tensor* final_y) {
  detail::check_defined(kOp, z, "z");
  detail::check_float(kOp, z);
  check_operand(z, "z", z, 4, "[L, B, H, D]");
  const int64_t L = z.size(0), B = z.size(1), H = z.size(2), D = z.size(3);
  check_operand(rk, "rk", z, 4, "[L, B, H, D]");
  check_shape(rk, "rk", z, {L, B, H, D});
  check_operand(rv, "rv", z, 4, "[L, B, H, D]");
  check_shape(rv, "rv", z, {L, B, H, D});
  check_operand(gamma, "gamma", z, 4, "[L, B, H, 1]");
  check_shape(gamma, "gamma", z, {L, B, H, 1});
  if (initial_R.defined()) {
    check_operand(initial_R, "initial_R", z, 4, "[B, H, D, D]");
    check_shape(initial_R, "initial_R", z, {B, H, D, D});
  }
  if (initial_y.defined()) {
    check_operand(initial_y, "initial_y", z, 3, "[B, H, D]");
    check_shape(initial_y, "initial_y", z, {B, H, D});
  }

  const bool grad = needs_grad({&z, &rk, &rv, &gamma});
  Tensor y = Tensor::empty({L, B, H, D}, z.dtype(), z.device());
  // R_L is needed by the caller (final_R) or by the backward, which starts from it.
  Tensor last = final_R || grad ? Tensor::empty({B, H, D, D}, z.dtype(), z.device()) : Tensor();
  Tensor vbar = grad ? Tensor::empty({L, B, H, D}, z.dtype(), z.device()) : Tensor();
  const Tensor rk_d = dense(rk), rv_d = dense(rv), gamma_d = dense(gamma), y0 = dense(initial_y);
  backend_for(z).delta_rnn({.z = dense(z), .rk = rk_d, .rv = rv_d, .gamma = gamma_d, .initial_R = dense(initial_R),
                           .initial_y = y0, .out = y, .final_R = last, .vbar = vbar});
  if (final_R) *final_R = last;
  if (final_y) {
    // y_L is the output's last row (a copy, so the caller's state does not pin y);
    // over no steps it is y_0.
    if (L > 0) *final_y = clone(squeeze(narrow(y, 0, L - 1, 1), 0));
    else *final_y = y0.defined() ? clone(y0) : Tensor::zeros({B, H, D}, z.dtype(), z.device());
  }
  if (grad) record({OpId::delta_rnn, {z, rk, rv, gamma}, {rk_d, rv_d, gamma_d, vbar, last, y0}}, y);
  return y;
}

// ---- backward rules ----------------------------------------------------------------
//
// One fused kernel sweeps time in reverse, rebuilding R_{t-1} = R_t - u_t rk_tᵀ
// from the saved R_L, and writes dz, drk, drv and dgamma for every step (the
// formulas are in engine/kernels/delta_rnn.h).

namespace {

// inputs = {z, rk, rv, gamma} (not kept), output y (kept),
// saved = {rk, rv, gamma (dense), vbar, R_L, initial_y (or undefined)}.
Grads delta_rnn_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor &rk = n.saved[0], &rv = n.saved[1], &gamma = n.saved[2];
  auto like = [&](const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); };
  // The kernel writes every gradient in one sweep: all are allocated, the unneeded dropped.
  Tensor gz = like(rk), grk = like(rk), grv = like(rv), ggamma = like(gamma);
  backend_for(rk).delta_rnn_backward({.grad_out = contiguous(g), .rk = rk, .rv = rv, .gamma = gamma,
                                      .initial_y = n.saved[5], .out = contiguous(n.output), .vbar = n.saved[3],
                                      .final_R = n.saved[4], .grad_z = gz, .grad_rk = grk, .grad_rv = grv,
                                      .grad_gamma = ggamma});
  auto keep = [&](size_t i, const Tensor& t) { return n.needs_input_grad(i) ? t : Tensor(); };
  return {keep(0, gz), keep(1, grk), keep(2, grv), keep(3, ggamma)};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration delta_rnn_rules[] = {
    {OpId::delta_rnn, {delta_rnn_rule, false, true}},
};
}  // namespace

}  // namespace loom
