// delta_rnn.h: the kernel spec of the Delta RNN's recurrence (engine/ops.h), read
// by both backends (engine/cpu/delta_rnn.cpp, cuda/delta_rnn.cu).
//
// Tensors are sequence-first and contiguous: element (t, s, c) of z [L, B, H, D]
// lies at (t·S + s)·D + c, with s = b·H + h one of S = B·H independent
// sequences. Each sequence walks time with its recurrent fast weight R [D, D].
//
// ## Forward
//
// Per step t: s_t = softmax(y_{t-1}) (max-subtracted; y_0 = initial_y, or 0, whose
// softmax is uniform), then per row i of R the delta-rule step of
// engine/kernels/delta_rule.h with key rk_t, value rv_t and strength gamma_t,
// read with s_t instead of a query:
//   vbar_i = R[i]·rk_t;  u_i = gamma_t (rv_t[i] - vbar_i);  R[i] += u_i rk_t;
//   y_t[i] = z_t[i] + R[i]·s_t
//
// ## Backward
//
// In reverse time with R (from the saved R_L, rebuilt as R_{t-1} = R_t - u rk_tᵀ),
// G = dL/dR_t (from 0) and gy = dL/dy_t carried back from step t+1 through
// s_{t+1}. Per step, with ĝ = grad_out_t + gy and s_t recomputed from the saved
// y_{t-1}:
//   dz_t = ĝ
//   per row i: G[i] += ĝ_i s_t;  ds += ĝ_i R_t[i];  du_i = G[i]·rk_t; then the
//              delta-rule step's backward (delta_rule.h: drv = gamma du,
//              dgamma, drk, R back to R_{t-1}, G to dL/dR_{t-1})
//   gy = s_t ⊙ (ds - s_t·ds)               (softmax's backward: dL/dy_{t-1})
// At t = 1, gy would be the gradient of initial_y, which gets none: it is dropped.
#pragma once

#include "engine/kernels/delta_rule.h"

namespace loom {

// The delta_rnn kernels' operands (engine/op_list.h): z, rk, rv [L, B, H, D],
// gamma [L, B, H, 1], initial_R [B, H, D, D] and initial_y [B, H, D] (undefined:
// zeros), contiguous. Writes out [L, B, H, D]; final_R (R_L) and vbar
// [L, B, H, D] (R_{t-1} rk_t) when defined.
struct DeltaRnnArgs {
  Tensor z, rk, rv, gamma, initial_R, initial_y;
  Tensor out, final_R, vbar;
};

// Gradients of z, rk, rv, gamma (contiguous, overwritten) from grad_out, the
// inputs the backward needs and what the forward saved: out (each y_{t-1} gives
// softmax(y_{t-1})), vbar, and final_R = R_L, from which R_t is rebuilt backwards.
struct DeltaRnnBackwardArgs {
  Tensor grad_out, rk, rv, gamma, initial_y, out, vbar, final_R;
  Tensor grad_z, grad_rk, grad_rv, grad_gamma;
};

namespace kernels {

// The CUDA forward's shared memory, in elements, one block per sequence: R and
// the rows of rk, rv, softmax(y_{t-1}) and y (y_{t-1}, then y_t).
struct DeltaRnnForwardShared {
  Region R;               // [D, D]
  Region rk, rv, soft, y; // [D]
  int64_t total = 0;

  LOOM_HD explicit DeltaRnnForwardShared(int64_t D) {
    Carver m;
    R = m.take(D * D);
    rk = m.take(D);
    rv = m.take(D);
    soft = m.take(D);
    y = m.take(D);
    total = m.end;
  }
};

// The CUDA backward's shared memory: R and G = dL/dR; the rows of rk, rv, vbar,
// ĝ (then gy), softmax(y_{t-1}), u, c = dL/dvbar and ds; one dgamma partial per warp.
struct DeltaRnnBackwardShared {
  Region R, G;                                  // [D, D]
  Region rk, rv, vbar, g_out, soft, u, dvbar, ds; // [D]
  Region dgamma;                                // [warps]
  int64_t total = 0;

  LOOM_HD DeltaRnnBackwardShared(int64_t D, int64_t warps) {
    Carver m;
    R = m.take(D * D);
    G = m.take(D * D);
    rk = m.take(D);
    rv = m.take(D);
    vbar = m.take(D);
    g_out = m.take(D);
    soft = m.take(D);
    u = m.take(D);
    dvbar = m.take(D);
    ds = m.take(D);
    dgamma = m.take(warps);
    total = m.end;
  }
};

}  // namespace kernels

}  // namespace loom
