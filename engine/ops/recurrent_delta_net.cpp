// recurrent_delta_net.cpp: the Recurrent Delta Net (RDN; Irie, Schlag, Csordás,
// Schmidhuber 2021, eqs. 15-18), fused over time.
//
// A delta-rule fast weight W [D, D] whose slow net is recurrent: the queries,
// keys, values and learning rates of step t are fed by a_t = tanh(y_{t-1}), the
// previous output, through the parameters Rq, Rk, Rv [H, D, D] and rb [H, D]:
//   a_t = tanh(y_{t-1})                                  (y_0 = initial_y or 0)
//   q_t = softmax(qx_t + Rq a_t);  k_t = softmax(kx_t + Rk a_t)
//   v_t = vx_t + Rv a_t;           beta_t = sigmoid(bx_t + rb·a_t)
//   vbar_t = W_{t-1} k_t;  W_t = W_{t-1} + beta_t (v_t - vbar_t) k_tᵀ;  y_t = W_t q_t
// Because q, k, v and beta depend on y_{t-1}, the slow projections cannot be
// computed for all steps at once (as the Delta Net's are): one kernel walks the
// sequence of each (batch item, head) and computes them on the way.
//
// What the backward needs and how it gets it. It sweeps time in reverse. The
// fast weights W_t are not stored per step (that would be L·D² per sequence):
// the backward starts from W_L and rebuilds W_{t-1} = W_t - beta_t (v_t - vbar_t)
// k_tᵀ step by step. The op saves, per step, what the forward computed at O(D)
// per step and what would cost a matrix-vector product or more to recompute:
//   q_t, k_t (the softmaxes), v_t, beta_t (each needs an [D, D]·[D] product of the
//     recurrent parameters with a_t: recomputing them would redo the forward's
//     slow-net work), vbar_t (to rebuild W_{t-1} from W_t exactly as the forward
//     built W_t from W_{t-1}), and y_t (the op's output, which the rule keeps:
//     a_t = tanh(y_{t-1}) is recomputed from it, and it cannot be rebuilt cheaply
//     since it feeds the next step);
// plus W_L, initial_y and the parameters. Records inputs {qx, kx, vx, bx, Rq, Rk,
// Rv, rb}; initial_W and initial_y are not inputs of the record, so no gradient
// flows to them (like delta_rule's initial_state).
#include "engine/ops/op_helpers.h"

#include "engine/kernels/recurrent_delta_net.h"

namespace loom {

namespace {

const char* const kOp = "recurrent_delta_net";

// t is defined, has qx's dtype and device, and the shape `expected` (`layout` names its axes).
void check_operand(const Tensor& t, const char* what, const Tensor& qx, const Shape& expected, const char* layout) {
  detail::check_defined(kOp, t, what);
  LOOM_CHECK(t.dtype() == qx.dtype(), kOp, ": ", what, " ", t.describe(), " does not match the dtype of qx ",
             qx.describe());
  LOOM_CHECK(t.device() == qx.device(), kOp, ": ", what, " ", t.describe(), " is not on the device of qx ",
             qx.describe());
  LOOM_CHECK(t.shape() == expected, kOp, ": ", what, " must be ", layout, " = ", shape_str(expected),
             " to match qx ", shape_str(qx.shape()), ", got ", shape_str(t.shape()));
}

}  // namespace

Tensor recurrent_delta_net(const Tensor& qx, const Tensor& kx, const Tensor& vx, const Tensor& bx,
                           const Tensor& Rq, const Tensor& Rk, const Tensor& Rv, const Tensor& rb,
                           const Tensor& initial_W, const Tensor& initial_y, Tensor* final_W, Tensor* final_y) {
  detail::check_defined(kOp, qx, "qx");
  detail::check_float(kOp, qx);
  LOOM_CHECK(qx.dim() == 4, kOp, ": qx must be [L, B, H, D], got shape ", shape_str(qx.shape()));
  const int64_t L = qx.size(0), B = qx.size(1), H = qx.size(2), D = qx.size(3);
  LOOM_CHECK(D >= 1, kOp, ": qx ", shape_str(qx.shape()), " has D = 0 (the head size must be at least 1)");
  check_operand(kx, "kx", qx, {L, B, H, D}, "[L, B, H, D]");
  check_operand(vx, "vx", qx, {L, B, H, D}, "[L, B, H, D]");
  check_operand(bx, "bx", qx, {L, B, H, 1}, "[L, B, H, 1]");
  check_operand(Rq, "Rq", qx, {H, D, D}, "[H, D, D]");
  check_operand(Rk, "Rk", qx, {H, D, D}, "[H, D, D]");
  check_operand(Rv, "Rv", qx, {H, D, D}, "[H, D, D]");
  check_operand(rb, "rb", qx, {H, D}, "[H, D]");
  if (initial_W.defined()) check_operand(initial_W, "initial_W", qx, {B, H, D, D}, "[B, H, D, D]");
  if (initial_y.defined()) check_operand(initial_y, "initial_y", qx, {B, H, D}, "[B, H, D]");

  const bool grad = needs_grad({&qx, &kx, &vx, &bx, &Rq, &Rk, &Rv, &rb});
  auto empty = [&](const Shape& shape) { return Tensor::empty(shape, qx.dtype(), qx.device()); };
  Tensor y = empty({L, B, H, D});
  // W_L is needed by the caller (final_W) or by the backward, which starts from it.
  Tensor last_W = final_W || grad ? empty({B, H, D, D}) : Tensor();
  Tensor last_y = final_y ? empty({B, H, D}) : Tensor();
  Tensor q, k, v, beta, vbar;  // per step, for the backward only
  if (grad) {
    q = empty({L, B, H, D});
    k = empty({L, B, H, D});
    v = empty({L, B, H, D});
    beta = empty({L, B, H, 1});
    vbar = empty({L, B, H, D});
  }
  const Tensor Rq_d = dense(Rq), Rk_d = dense(Rk), Rv_d = dense(Rv), rb_d = dense(rb), y0 = dense(initial_y);
  // qx, kx, vx and bx are read in place (windows of one projection, in the models).
  using detail::unit_last_stride;
  backend_for(qx).recurrent_delta_net({.qx = unit_last_stride(qx), .kx = unit_last_stride(kx),
                                     .vx = unit_last_stride(vx), .bx = unit_last_stride(bx),
                                     .Rq = Rq_d, .Rk = Rk_d, .Rv = Rv_d, .rb = rb_d, .initial_W = dense(initial_W),
                                     .initial_y = y0, .out = y, .final_W = last_W, .final_y = last_y, .q = q,
                                     .k = k, .v = v, .beta = beta, .vbar = vbar});
  if (final_W) *final_W = last_W;
  if (final_y) *final_y = last_y;
  if (grad) {
    // The parameters are saved detached: the record refers to their values, not to their graphs.
    auto plain = [](const Tensor& t) { return t.defined() ? t.detach() : Tensor(); };
    record({OpId::recurrent_delta_net,
            {qx, kx, vx, bx, Rq, Rk, Rv, rb},
            {q, k, v, beta, vbar, last_W, plain(y0), plain(Rq_d), plain(Rk_d), plain(Rv_d), plain(rb_d)}},
           y);
  }
  return y;
}

// ---- backward rules ----------------------------------------------------------------
//
// One fused kernel sweeps time in reverse from W_L, rebuilding each W_{t-1}, and
// writes the gradients of qx, kx, vx, bx for every step and of Rq, Rk, Rv, rb
// summed over the batch (the formulas are in engine/kernels/recurrent_delta_net.h).

namespace {

// inputs = {qx, kx, vx, bx, Rq, Rk, Rv, rb} (shapes only), output = y,
// saved = {q, k, v, beta, vbar, W_L, initial_y (or undefined), Rq, Rk, Rv, rb}.
Grads recurrent_delta_net_rule(const RecordedOp& n, const Tensor& g) {
  const std::vector<Tensor>& s = n.saved;
  const Tensor& y = n.output;
  auto like = [&](size_t input) { return Tensor::empty(n.input_shapes[input], y.dtype(), y.device()); };
  // The kernel writes every gradient in one sweep: all are allocated, the unneeded dropped.
  Tensor gqx = like(0), gkx = like(1), gvx = like(2), gbx = like(3), gRq = like(4), gRk = like(5), gRv = like(6),
         grb = like(7);
  backend_for(y).recurrent_delta_net_backward({.grad_out = contiguous(g), .y = y, .initial_y = s[6], .Rq = s[7],
                                              .Rk = s[8], .Rv = s[9], .rb = s[10], .q = s[0], .k = s[1], .v = s[2],
                                              .beta = s[3], .vbar = s[4], .final_W = s[5], .grad_qx = gqx,
                                              .grad_kx = gkx, .grad_vx = gvx, .grad_bx = gbx, .grad_Rq = gRq,
                                              .grad_Rk = gRk, .grad_Rv = gRv, .grad_rb = grb});
  auto keep = [&](size_t i, const Tensor& t) { return n.needs_input_grad(i) ? t : Tensor(); };
  return {keep(0, gqx), keep(1, gkx), keep(2, gvx), keep(3, gbx),
          keep(4, gRq), keep(5, gRk), keep(6, gRv), keep(7, grb)};
}

// {inputs, output}: the rule keeps the output y (a_t = tanh(y_{t-1})), not the inputs.
const RuleRegistration recurrent_delta_net_rules[] = {
    {OpId::recurrent_delta_net, {recurrent_delta_net_rule, false, true}},
};
}  // namespace

}  // namespace loom
