// delta_rule.h: the kernel spec of the fast-weight recurrence (engine/ops.h), and
// the delta-rule step that the Delta RNN, the Delta LSTM and the Recurrent Delta
// Net build on. Read by both backends (engine/cpu/delta_rule.cpp,
// cuda/delta_rule.cu, and the kernels of those three ops).
//
// Tensors are sequence-first and contiguous: with s = b·H + h one of S = B·H
// independent sequences, element (t, s, c) of q [L, B, H, Dk] lies at
// (t·S + s)·Dk + c. Each sequence walks time with its fast weight W [Dv, Dk].
//
// ## The step
//
// Row i of W evolves on its own:
//   vbar_i = W_{t-1}[i]·k_t                  (the read: what W already stores under k_t)
//   u_i    = beta_t (v_t[i] - vbar_i)        (delta rule; the sum rule writes u_i = v_t[i])
//   W_t[i] = W_{t-1}[i] + u_i k_t            (the write)
// and the op reads y_t[i] = W_t[i]·q_t. (The Delta RNN and the Delta LSTM read
// with softmax(y_{t-1}) instead of q_t, the RDN computes q, k, v, beta from its
// own slow net: the step is the same.) The dot products are the backends' own
// (SIMD loops on the CPU, warp reductions on the GPU); the arithmetic of a row
// and of an entry is below, once.
//
// ## Its backward
//
// The backward sweeps time in reverse with W (from the saved W_L, rebuilt as
// W_{t-1} = W_t - u k_tᵀ) and G = dL/dW_t (from 0). Per step, the read-out adds
// its part to G first (y = W_t q: G[i] += ĝ_i q, dq += ĝ_i W_t[i]); then per row:
//   du_i  = G[i]·k_t                          (dL/du_i)
//   dv_i  = beta du_i;  dbeta += (v_i - vbar_i) du_i;  c_i = -beta du_i (= dL/dvbar_i)
// and per entry j of the row, in this order:
//   dk_j += u_i G[i, j]                       (the write W += u kᵀ)
//   W[i, j] -= u_i k_j                        (now W_{t-1})
//   dk_j += c_i W_{t-1}[i, j]                 (the read vbar = W_{t-1} k)
//   G[i, j] += c_i k_j                        (now dL/dW_{t-1})
// For the sum rule u = v, dv_i = du_i and c = 0. u_i is recomputed from the saved
// vbar with the forward's own expression (write_strength), so it has the
// forward's bits; only the subtraction that rebuilds W rounds.
//
// ## In chunks (the CPU kernels, for heads of 64 × 64 and more)
//
// Since each row of W evolves on its own, C steps from t0 can be taken at once.
// With W_0 the weight before the chunk and t, s counting steps within it:
//   vbar_t = W_0 k_t + Σ_{s<t} (k_s·k_t) u_s       (what W_{t-1} stores under k_t)
//   u_t    = write_strength(beta_t, v_t, vbar_t)   (solved for t = 0, 1, … in turn)
//   y_t    = W_0 q_t + Σ_{s<=t} (k_s·q_t) u_s
//   W_C    = W_0 + Σ_t u_t k_tᵀ
// The large parts are products: W_0 against the chunk's keys and queries, and
// the rank-C write; only the solve for u walks the steps, over C × Dv entries.
// The backward takes the chunks in reverse with W (rebuilt as W_0 = W_C - Σ u_t k_tᵀ)
// and G = dL/dW_C. With ĝ_t = dL/dy_t and c_t = dL/dvbar_t:
//   du_t = G k_t + Σ_{t'>=t} (q_t'·k_t) ĝ_t' + Σ_{t'>t} (k_t'·k_t) c_t'   (t = C-1, …, 0 in turn)
//   then row_backward gives dv_t, dbeta_t and c_t from du_t
//   dq_t = W_0ᵀ ĝ_t + Σ_{s<=t} (u_s·ĝ_t) k_s
//   dk_t = W_0ᵀ c_t + Gᵀ u_t + Σ_{s<t} (u_s·c_t) k_s + Σ_{t'>t} (u_t·c_t') k_t'
//          + Σ_{t'>=t} (u_t·ĝ_t') q_t'
//   G   <- G + Σ_t ĝ_t q_tᵀ + Σ_t c_t k_tᵀ                 (now dL/dW_0)
// (the sum rule: u = v, c = 0). These are the step-by-step rules above with the
// sums over steps gathered. The large products do the step kernels' multiply-adds
// in another order, and the C × C dot products among the chunk's keys, queries,
// u, ĝ and c come on top (about C/Dv of the work), so the last bits differ from
// the step-by-step kernels (the CUDA ones).
#pragma once

#include <cstdint>

#include "engine/host_device.h"
#include "engine/kernels/layout.h"
#include "engine/tensor.h"

namespace loom {

namespace kernels::delta_step {

// u = beta (v - vbar): how much of the row's value the step writes.
template <class T>
LOOM_HD T write_strength(T beta, T v, T vbar) {
  return beta * (v - vbar);
}

// One entry of the write W[i] += u k. W and K may be vectors of T (the CPU's
// SIMD lanes) or T itself.
template <class W, class T, class K>
LOOM_HD W write(W w, T u, K k) {
  return w + u * k;
}

// What one row's backward needs from du = G[i]·k, beside u.
template <class T>
struct RowGrads {
  T u;       // the forward's u, recomputed bit for bit
  T dvbar;   // c = dL/dvbar = -beta du
  T dv;      // beta du
  T dbeta;   // this row's share of dbeta: (v - vbar) du
};

template <class T>
LOOM_HD RowGrads<T> row_backward(T beta, T v, T vbar, T du) {
  const T diff = v - vbar;
  return {beta * diff, -beta * du, beta * du, diff * du};
}

// One entry (i, j) of the backward of the write and the read, in the order of
// the header: dk accumulates column j's gradient of the key.
template <class W, class T, class K>
LOOM_HD void unwrite(T u, T dvbar, K k, W& w, W& g, W& dk) {
  dk += u * g;
  w = w - u * k;
  dk += dvbar * w;
  g += dvbar * k;
}

// The same for the sum rule (c = 0: nothing is read).
template <class W, class T, class K>
LOOM_HD void unwrite_sum(T u, K k, W& w, const W& g, W& dk) {
  dk += u * g;
  w = w - u * k;
}

}  // namespace kernels::delta_step

namespace kernels {

// The CUDA forward's shared memory, in elements, one block per sequence: W and
// this step's rows of q, k, v.
struct DeltaRuleForwardShared {
  Region W;     // [Dv, Dk]
  Region q, k;  // [Dk]
  Region v;     // [Dv]
  int64_t total = 0;

  LOOM_HD DeltaRuleForwardShared(int64_t Dk, int64_t Dv) {
    Carver m;
    W = m.take(Dv * Dk);
    q = m.take(Dk);
    k = m.take(Dk);
    v = m.take(Dv);
    total = m.end;
  }
};

// The CUDA backward's shared memory: W and G = dL/dW; the rows of q, k, v, ĝ,
// vbar, u and c = dL/dvbar; one dbeta partial per warp.
struct DeltaRuleBackwardShared {
  Region W, G;                         // [Dv, Dk]
  Region q, k;                         // [Dk]
  Region v, g_out, vbar, u, dvbar;     // [Dv]
  Region dbeta;                        // [warps]
  int64_t total = 0;

  LOOM_HD DeltaRuleBackwardShared(int64_t Dk, int64_t Dv, int64_t warps) {
    Carver m;
    W = m.take(Dv * Dk);
    G = m.take(Dv * Dk);
    q = m.take(Dk);
    k = m.take(Dk);
    v = m.take(Dv);
    g_out = m.take(Dv);
    vbar = m.take(Dv);
    u = m.take(Dv);
    dvbar = m.take(Dv);
    dbeta = m.take(warps);
    total = m.end;
  }
};

}  // namespace kernels

// The delta_rule kernels' operands (engine/op_list.h). q, k [L, B, H, Dk], v
// [L, B, H, Dv], beta [L, B, H, 1] (undefined: the sum rule), initial_state
// [B, H, Dv, Dk] (undefined: zeros), all contiguous. Writes out [L, B, H, Dv];
// final_state (W_L) and vbar [L, B, H, Dv] (delta rule only) when defined.
struct DeltaRuleArgs {
  Tensor q, k, v, beta, initial_state;
  Tensor out, final_state, vbar;
};

// Gradients of q, k, v, beta (contiguous, overwritten; grad_beta undefined for
// the sum rule) from grad_out, the inputs and what the forward saved: vbar and
// final_state = W_L, from which the kernel rebuilds every W_t backwards.
struct DeltaRuleBackwardArgs {
  Tensor grad_out, q, k, v, beta, vbar, final_state;
  Tensor grad_q, grad_k, grad_v, grad_beta;
};

}  // namespace loom
