// recurrent_delta_net.h: the kernel spec of the Recurrent Delta Net (RDN, the
// recurrence of engine/ops.h), read by both backends
// (engine/cpu/recurrent_delta_net.cpp, cuda/recurrent_delta_net.cu).
//
// Tensors are sequence-first: element (t, s, i) of y [L, B, H, D] lies at
// (t·S + s)·D + i, with s = b·H + h one of S = B·H independent sequences; the
// parameters of sequence s are those of head h = s mod H. The inputs qx, kx, vx
// and bx are read through their strides (SequenceRows: windows of one
// projection need no copy); everything else is contiguous. Each sequence walks
// time with its fast weight W [D, D].
//
// ## Forward
//
// Per step: a = tanh(y_{t-1}); the slow net's q = softmax(qx + Rq a),
// k = softmax(kx + Rk a), v = vx + Rv a, beta = σ(bx + rb·a); then the delta-rule
// step of engine/kernels/delta_rule.h (vbar = W k, u = beta (v - vbar),
// W += u kᵀ) and the read-out y_t = W_t q.
//
// ## Backward
//
// In reverse time with W (from the saved W_L, rebuilt as W_{t-1} = W_t - u kᵀ),
// G = dL/dW_t (from 0) and e = dL/dy_t carried back from step t+1 through
// a_{t+1} = tanh(y_t). Per step, with ĝ = grad_out_t + e:
//   G += ĝ qᵀ;  dq = W_tᵀ ĝ                           (y_t = W_t q)
//   du = G k; then the delta-rule step's backward (delta_rule.h): dv, dbeta,
//   c = dL/dvbar, dk from the write and the read, W back to W_{t-1}, G to dL/dW_{t-1}
//   dqx = q ⊙ (dq - q·dq);  dkx = k ⊙ (dk - k·dk);  dvx = dv;  dbx = dbeta·beta(1 - beta)
//   dRq += dqx aᵀ;  dRk += dkx aᵀ;  dRv += dvx aᵀ;  drb += dbx a
//   e = (Rqᵀ dqx + Rkᵀ dkx + Rvᵀ dvx + rb dbx) ⊙ (1 - a²)   (dL/dy_{t-1})
// The parameters are shared by the B sequences of a head, and their gradients
// must not depend on how sequences fall onto threads or blocks. The CUDA kernels
// let every sequence sum its own dRq, dRk, dRv, drb (`partials`), then add those
// of a head in the order of b (reduce_head_entry). The CPU keeps every step's a
// and computes each head's sums after the sweep as one product over all steps
// and sequences (engine/cpu/recurrent_delta_net.cpp).
#pragma once

#include "engine/backend.h"
#include "engine/kernels/delta_rule.h"
#include "engine/kernels/sequence_rows.h"

namespace loom {

// The recurrent_delta_net kernels' operands (engine/op_list.h): qx, kx, vx
// [L, B, H, D] and bx [L, B, H, 1] with unit stride on the last axis (the
// others free); Rq, Rk, Rv [H, D, D], rb [H, D], initial_W [B, H, D, D] and
// initial_y [B, H, D] (undefined: zeros), contiguous. Writes out
// [L, B, H, D]; final_W (W_L) and final_y [B, H, D] when defined; and, for the
// backward, the per-step q, k, v, vbar = W_{t-1} k [L, B, H, D] and beta
// [L, B, H, 1] when defined (all or none).
struct RecurrentDeltaNetArgs {
  Tensor qx, kx, vx, bx, Rq, Rk, Rv, rb, initial_W, initial_y;
  Tensor out, final_W, final_y, q, k, v, beta, vbar;
};

// Gradients of qx, kx, vx, bx (overwritten, contiguous) and of Rq, Rk, Rv, rb
// (overwritten: sums over the batch in a fixed order) from grad_out, the output
// y, initial_y (undefined: zeros), the parameters and what the forward saved;
// W_t is rebuilt backwards from final_W = W_L.
struct RecurrentDeltaNetBackwardArgs {
  Tensor grad_out, y, initial_y, Rq, Rk, Rv, rb, q, k, v, beta, vbar, final_W;
  Tensor grad_qx, grad_kx, grad_vx, grad_bx, grad_Rq, grad_Rk, grad_Rv, grad_rb;
};

namespace kernels {

// The sizes: S = B·H sequences of L steps, heads of size D.
struct RecurrentDeltaNetDims {
  int64_t L = 0, S = 0, H = 0, D = 0;
};

inline RecurrentDeltaNetDims recurrent_delta_net_dims(const Tensor& qx) {
  return {qx.size(0), qx.size(1) * qx.size(2), qx.size(2), qx.size(3)};
}

// The forward's operands as raw pointers (the tensors of RecurrentDeltaNetArgs;
// an undefined one is null), the inputs as rows read through their strides.
template <class T>
struct RecurrentDeltaNetForward {
  SequenceRows<T> qx, kx, vx, bx;
  const T *Rq, *Rk, *Rv, *rb, *W0, *y0;
  T *y, *W_last, *y_last;
  T *q, *k, *v, *beta, *vbar;  // per step, all null when the backward is not needed
};

template <class T>
RecurrentDeltaNetForward<T> pointers_of(const RecurrentDeltaNetArgs& a) {
  return {rows_of<T>(a.qx),        rows_of<T>(a.kx),        rows_of<T>(a.vx),    rows_of<T>(a.bx),
          a.Rq.data<T>(),          a.Rk.data<T>(),          a.Rv.data<T>(),      a.rb.data<T>(),
          data_or_null<const T>(a.initial_W), data_or_null<const T>(a.initial_y), a.out.data<T>(),
          data_or_null<T>(a.final_W), data_or_null<T>(a.final_y), data_or_null<T>(a.q),
          data_or_null<T>(a.k),    data_or_null<T>(a.v),    data_or_null<T>(a.beta), data_or_null<T>(a.vbar)};
}

// The backward's operands as raw pointers, and a buffer for the per-sequence
// sums of the parameters' gradients (the CUDA kernels'; null on the CPU).
template <class T>
struct RecurrentDeltaNetBackward {
  const T *g, *y, *y0, *Rq, *Rk, *Rv, *rb, *q, *k, *v, *beta, *vbar, *W_last;
  T *gqx, *gkx, *gvx, *gbx;
  T* partials;  // [S, 3·D·D + D]: each sequence's dRq, dRk, dRv, drb (CUDA only)
};

template <class T>
RecurrentDeltaNetBackward<T> pointers_of(const RecurrentDeltaNetBackwardArgs& a, T* partials) {
  return {a.grad_out.data<T>(), a.y.data<T>(),    data_or_null<const T>(a.initial_y), a.Rq.data<T>(),
          a.Rk.data<T>(),       a.Rv.data<T>(),   a.rb.data<T>(),    a.q.data<T>(),      a.k.data<T>(),
          a.v.data<T>(),        a.beta.data<T>(), a.vbar.data<T>(),  a.final_W.data<T>(), a.grad_qx.data<T>(),
          a.grad_kx.data<T>(),  a.grad_vx.data<T>(), a.grad_bx.data<T>(), partials};
}

// Entry x of head h's parameter gradients (dRq, dRk, dRv, drb one after the
// other, 3·D² + D entries): the sum of the B sequences' partials, b in order,
// the same bits for any thread or block count.
template <class T>
LOOM_HD void reduce_head_entry(const T* partials, T* gRq, T* gRk, T* gRv, T* grb, int64_t h, int64_t x, int64_t B,
                               int64_t H, int64_t D) {
  const int64_t WN = D * D, P = 3 * WN + D;
  T sum = 0;
  for (int64_t b = 0; b < B; ++b) sum += partials[(b * H + h) * P + x];
  if (x < WN) gRq[h * WN + x] = sum;
  else if (x < 2 * WN) gRk[h * WN + x - WN] = sum;
  else if (x < 3 * WN) gRv[h * WN + x - 2 * WN] = sum;
  else grb[h * D + x - 3 * WN] = sum;
}

// The CUDA forward's shared memory, in elements, one block per sequence: W; the
// rows of a = tanh(y_{t-1}), the pre-activations of q and k, q, k, v and y; beta
// and its pre-activation.
struct RecurrentDeltaNetForwardShared {
  Region W;                                  // [D, D]
  Region a, pre_q, pre_k, q, k, v, y;        // [D]
  Region beta;                               // [2]: beta, its pre-activation
  int64_t total = 0;

  LOOM_HD explicit RecurrentDeltaNetForwardShared(int64_t D) {
    Carver m;
    W = m.take(D * D);
    a = m.take(D);
    pre_q = m.take(D);
    pre_k = m.take(D);
    q = m.take(D);
    k = m.take(D);
    v = m.take(D);
    y = m.take(D);
    beta = m.take(2);
    total = m.end;
  }
};

// The CUDA backward's shared memory: W and G = dL/dW; the rows of a, e, ĝ, q, k,
// v, vbar, u, c = dL/dvbar, dq, dk, dqx, dkx, dv; three scalars (q·dq, k·dk,
// dbx); one dbeta partial per warp.
struct RecurrentDeltaNetBackwardShared {
  Region W, G;                                                         // [D, D]
  Region a, e, g_out, q, k, v, vbar, u, dvbar, dq, dk, dqx, dkx, dv;   // [D]
  Region scalars;                                                      // [3]
  Region dbeta;                                                        // [warps]
  int64_t total = 0;

  LOOM_HD RecurrentDeltaNetBackwardShared(int64_t D, int64_t warps) {
    Carver m;
    W = m.take(D * D);
    G = m.take(D * D);
    a = m.take(D);
    e = m.take(D);
    g_out = m.take(D);
    q = m.take(D);
    k = m.take(D);
    v = m.take(D);
    vbar = m.take(D);
    u = m.take(D);
    dvbar = m.take(D);
    dq = m.take(D);
    dk = m.take(D);
    dqx = m.take(D);
    dkx = m.take(D);
    dv = m.take(D);
    scalars = m.take(3);
    dbeta = m.take(warps);
    total = m.end;
  }
};

}  // namespace kernels

}  // namespace loom
