// delta_lstm.h: the kernel spec of the Delta LSTM's recurrence (engine/ops.h),
// read by both backends (engine/cpu/delta_lstm.cpp, cuda/delta_lstm.cu).
//
// Tensors are sequence-first and contiguous: with s = b·H + h one of S = B·H
// independent sequences, element (t, s, g, j) of z, rk, rv [L, B, H, 3, D] lies
// at ((t·S + s)·3 + g)·D + j, gamma_g,t at (t·S + s)·3 + g, h_t and c_t
// [L, B, H, D] at (t·S + s)·D + j, and R_g of sequence s [B, H, 3, D, D] at
// (s·3 + g)·D². Each sequence walks time with its three fast weights R_g [D, D].
//
// ## Forward
//
// Per step t, with s_t = softmax(h_{t-1}), each gate g runs the delta-rule step
// of engine/kernels/delta_rule.h on its own R_g (key rk_g, value rv_g, strength
// gamma_g) and reads it with s_t:
//   vbar = R_g[i]·rk_g;  δ_i = gamma_g (rv_g[i] - vbar);  R_g[i] += δ_i rk_g;  a_g[i] = z_g[i] + R_g[i]·s_t
// then the cell (below) turns a_0, a_1, a_2 and c_{t-1} into c_t and h_t.
//
// What the forward saves for the backward, and why: vbar (to rebuild R_g,t-1
// from R_g,t with the forward's own δ, and for dgamma), c_t (the cell state
// cannot be run backwards: 1 - i may be 0), and R_L. h_t is the output.
// Everything else is recomputed: s_t from h_{t-1}, the pre-activations a_g from
// the rebuilt R_g,t.
//
// ## Backward
//
// In reverse time with R_g (from R_L, rebuilt as R_g,t-1 = R_g,t - δ rk_gᵀ),
// G_g = dL/dR_g,t (from 0), dh_next = dL/dh_t through s_{t+1} and dc_next =
// dL/dc_t through c_{t+1} (both from 0). Per step:
//   s = softmax(h_{t-1});  per row i: a_g[i] = z_g[i] + R_g[i]·s  (R_g,t), then the cell's
//   backward with dh = ĝ_t[i] + dh_next[i] gives da_g[i] (= dz_g[i]) and dc_next[i];
//   per gate g and row i:
//     G[i] += da_g[i] s                    (a_g = z_g + R_g,t s)
//     ds   += da_g[i] R_g,t[i]
//     dδ_i  = G[i]·rk_g, then the delta-rule step's backward (delta_rule.h): drv_g,
//             dgamma_g, drk_g, R_g back to R_g,t-1, G to dL/dR_g,t-1
//   dh_next = s ⊙ (ds - s·ds)              (softmax's backward: h_{t-1} → s_t), ds = Σ_g ds_g
#pragma once

#include <cstdint>

#include "engine/backend.h"
#include "engine/host_device.h"
#include "engine/kernels/delta_rule.h"
#include "engine/kernels/layout.h"
#include "engine/vector_math.h"

namespace loom {

// The delta_lstm kernels' operands (engine/op_list.h): z, rk, rv [L, B, H, 3, D],
// gamma [L, B, H, 3, 1], initial_R [B, H, 3, D, D], initial_h, initial_c
// [B, H, D] (undefined: zeros), contiguous. Writes out = h [L, B, H, D]; and when
// defined: cell [L, B, H, D] (c_t), vbar [L, B, H, 3, D] (R_g,t-1 rk_g,t),
// final_R [B, H, 3, D, D], final_h, final_c [B, H, D].
struct DeltaLstmArgs {
  Tensor z, rk, rv, gamma, initial_R, initial_h, initial_c;
  Tensor out, cell, vbar, final_R, final_h, final_c;
};

// Gradients of z, rk, rv, gamma (contiguous, overwritten) from grad_out, the
// inputs, the initial h and c (undefined: zeros) and what the forward saved: out
// (h_t), cell (c_t), vbar and final_R = R_L, from which R_t is rebuilt backwards.
struct DeltaLstmBackwardArgs {
  Tensor grad_out, z, rk, rv, gamma, initial_h, initial_c, out, cell, vbar, final_R;
  Tensor grad_z, grad_rk, grad_rv, grad_gamma;
};

namespace kernels {

// Three gates per step: input i, update u, output o.
constexpr int64_t kDeltaLstmGates = 3;

// The sizes: S = B·H sequences of L steps, gates of size D.
struct DeltaLstmDims {
  int64_t L = 0, S = 0, D = 0;
};

inline DeltaLstmDims delta_lstm_dims(const Tensor& z) { return {z.size(0), z.size(1) * z.size(2), z.size(4)}; }

// The inputs as raw pointers (contiguous; an undefined initial state is null).
template <class T>
struct DeltaLstmInputs {
  const T *z, *rk, *rv, *gamma, *R0, *h0, *c0;
  DeltaLstmDims d;
  LOOM_HD int64_t step(int64_t t, int64_t s) const { return t * d.S + s; }  // row of [L, B, H, *]
};

// What the forward writes: h, and the optional outputs (null when undefined).
template <class T>
struct DeltaLstmOutputs {
  T *h, *cell, *vbar, *R_last, *h_last, *c_last;
};

template <class T>
DeltaLstmInputs<T> inputs_of(const DeltaLstmArgs& a) {
  return {a.z.data<T>(), a.rk.data<T>(), a.rv.data<T>(), a.gamma.data<T>(), data_or_null<const T>(a.initial_R),
          data_or_null<const T>(a.initial_h), data_or_null<const T>(a.initial_c), delta_lstm_dims(a.z)};
}

template <class T>
DeltaLstmOutputs<T> outputs_of(const DeltaLstmArgs& a) {
  return {a.out.data<T>(), data_or_null<T>(a.cell), data_or_null<T>(a.vbar), data_or_null<T>(a.final_R),
          data_or_null<T>(a.final_h), data_or_null<T>(a.final_c)};
}

// The backward's operands: the inputs (R0 null), what the forward saved, and
// the gradients it writes.
template <class T>
struct DeltaLstmSaved {
  const T *g_out, *h, *cell, *vbar, *R_last;
};

template <class T>
struct DeltaLstmGrads {
  T *z, *rk, *rv, *gamma;
};

template <class T>
DeltaLstmInputs<T> inputs_of(const DeltaLstmBackwardArgs& a) {
  return {a.z.data<T>(), a.rk.data<T>(), a.rv.data<T>(), a.gamma.data<T>(), nullptr,
          data_or_null<const T>(a.initial_h), data_or_null<const T>(a.initial_c), delta_lstm_dims(a.z)};
}

template <class T>
DeltaLstmSaved<T> saved_of(const DeltaLstmBackwardArgs& a) {
  return {a.grad_out.data<T>(), a.out.data<T>(), a.cell.data<T>(), a.vbar.data<T>(), a.final_R.data<T>()};
}

template <class T>
DeltaLstmGrads<T> grads_of(const DeltaLstmBackwardArgs& a) {
  return {a.grad_z.data<T>(), a.grad_rk.data<T>(), a.grad_rv.data<T>(), a.grad_gamma.data<T>()};
}

// The cell: the pointwise part of one step. Per element, with the gates'
// pre-activations a_g = z_g + (R_g s)[i]:
//   i = σ(a_0), u = a_1, o = σ(a_2);  c = i u + (1 - i) c_prev;  h = o c
// The backward takes dh (from the output and from the next step's softmax) and
// dc (from the next step's cell) and returns the gradients of the three
// pre-activations and of c_prev.
namespace delta_lstm_cell {

// vmath's (engine/vector_math.h): branch-free, so the CPU's cell loop vectorizes.
template <class T>
LOOM_HD T sigmoid(T x) {
  return vmath::sigmoid(x);
}

// c and h of one element.
template <class T>
LOOM_HD void forward(T a0, T a1, T a2, T c_prev, T& c, T& h) {
  const T i = sigmoid(a0), o = sigmoid(a2);
  c = i * a1 + (T(1) - i) * c_prev;
  h = o * c;
}

template <class T>
struct Grads {
  T da0, da1, da2;  // dL/da_g
  T dc_prev;        // dL/dc_{t-1} through this step
};

// dh = dL/dh_t (all paths), dc = dL/dc_t from the next step only.
template <class T>
LOOM_HD Grads<T> backward(T a0, T a1, T a2, T c_prev, T c, T dh, T dc) {
  const T i = sigmoid(a0), o = sigmoid(a2);
  const T dc_total = dh * o + dc;         // h = o c, and c feeds the next step
  const T di = dc_total * (a1 - c_prev);  // c = c_prev + i (u - c_prev)
  return {di * i * (T(1) - i), dc_total * i, dh * c * o * (T(1) - o), dc_total * (T(1) - i)};
}

}  // namespace delta_lstm_cell

// The CUDA forward's shared memory, in elements, one block per sequence: the
// three fast weights, h_{t-1}, c_{t-1}, s = softmax(h_{t-1}), and this step's
// rows of z, rk, rv and the pre-activations a.
struct DeltaLstmForwardShared {
  Region R;            // [3, D, D]
  Region h, c, s;      // [D]
  Region z, rk, rv, a; // [3, D]
  int64_t total = 0;

  LOOM_HD explicit DeltaLstmForwardShared(int64_t D) {
    const int64_t GD = kDeltaLstmGates * D;
    Carver m;
    R = m.take(GD * D);
    h = m.take(D);
    c = m.take(D);
    s = m.take(D);
    z = m.take(GD);
    rk = m.take(GD);
    rv = m.take(GD);
    a = m.take(GD);
    total = m.end;
  }
};

// The CUDA backward's shared memory, in elements: R and G = dL/dR; the rows of
// D (h_{t-1}, c_{t-1}, c_t, ĝ = grad_out_t, s, dh_next, dc_next); the rows of
// 3·D (z, rk, rv, vbar, a then da, δ, c_i = dL/dvbar, the dgamma terms, ds per gate).
struct DeltaLstmBackwardShared {
  Region R, G;                                          // [3, D, D]
  Region h_prev, c_prev, c, g_out, s, dh_next, dc_next; // [D]
  Region z, rk, rv, vbar, a, delta, dvbar, dgamma, ds;  // [3, D]
  int64_t total = 0;

  LOOM_HD explicit DeltaLstmBackwardShared(int64_t D) {
    const int64_t GD = kDeltaLstmGates * D;
    Carver m;
    R = m.take(GD * D);
    G = m.take(GD * D);
    h_prev = m.take(D);
    c_prev = m.take(D);
    c = m.take(D);
    g_out = m.take(D);
    s = m.take(D);
    dh_next = m.take(D);
    dc_next = m.take(D);
    z = m.take(GD);
    rk = m.take(GD);
    rv = m.take(GD);
    vbar = m.take(GD);
    a = m.take(GD);
    delta = m.take(GD);
    dvbar = m.take(GD);
    dgamma = m.take(GD);
    ds = m.take(GD);
    total = m.end;
  }
};

}  // namespace kernels

}  // namespace loom
