// delta_lstm.cpp: CPU kernels of the Delta LSTM's recurrence (engine/ops.h).
//
// Tensors are sequence-first and contiguous: with s = b·H + h one of S = B·H
// independent sequences, element (t, s, g, j) of z, rk, rv [L, B, H, 3, D] lies
// at ((t·S + s)·3 + g)·D + j, gamma_g,t at (t·S + s)·3 + g, h_t and c_t [L, B, H, D]
// at (t·S + s)·D + j, and R_g of sequence s [B, H, 3, D, D] at (s·3 + g)·D² .
// Each sequence is one task (OpenMP over S): it walks time with its three fast
// weights R_g [D, D] in a private buffer (3·64·64 floats = 48 KiB at D = 64: they
// stay in L2 for the whole walk).
//
// Forward, per step t, with s_t = softmax(h_{t-1}) and per row i of each R_g:
//   vbar = R_g[i]·rk_g;  δ_i = gamma_g (rv_g[i] - vbar);  R_g[i] += δ_i rk_g;  a_g[i] = z_g[i] + R_g[i]·s_t
// (two passes over the row while it is in L1), then the cell of
// engine/delta_lstm_cell.h turns a_0, a_1, a_2 and c_{t-1} into c_t and h_t.
//
// What the forward saves for the backward, and why (engine/ops/delta_lstm.cpp):
// vbar (to rebuild R_g,t-1 from R_g,t with the forward's own δ, and for dgamma),
// c_t (the cell state cannot be run backwards: 1 - i may be 0), and R_L. h_t is
// the output. Everything else is recomputed: s_t from h_{t-1}, the pre-activations
// a_g from the rebuilt R_g,t.
//
// The backward sweeps time in reverse with R_g (from R_L, rebuilt as
// R_g,t-1 = R_g,t - δ rk_gᵀ), G_g = dL/dR_g,t (from 0), dh_next = dL/dh_t through
// s_{t+1} and dc_next = dL/dc_t through c_{t+1} (both from 0). Per step:
//   s = softmax(h_{t-1});  per row i: a_g[i] = z_g[i] + R_g[i]·s  (R_g,t), then the cell's
//   backward with dh = ĝ_t[i] + dh_next[i] gives da_g[i] (= dz_g[i]) and dc_next[i];
//   per gate g and row i:
//     G[i] += da_g[i] s                    (a_g = z_g + R_g,t s)
//     ds   += da_g[i] R_g,t[i]
//     dδ_i  = G[i]·rk_g                    (dL/dδ_i)
//     drv_g[i] = gamma dδ_i;  dgamma_g += (rv_g[i] - vbar_i) dδ_i;  c_i = -gamma dδ_i = dL/dvbar_i
//     drk_g += δ_i G[i]                    (the write R += δ rkᵀ)
//     R[i] -= δ_i rk_g                     (now R_g,t-1[i])
//     drk_g += c_i R_g,t-1[i]              (the read vbar = R_g,t-1 rk)
//     G[i] += c_i rk_g                     (now dL/dR_g,t-1[i])
//   dh_next = s ⊙ (ds - s·ds)              (softmax's backward: h_{t-1} → s_t)
// δ_i is recomputed from the saved vbar with the forward's own expression, so it
// has the forward's bits; only the subtraction that rebuilds R rounds.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"
#include "engine/cpu/row_math.h"
#include "engine/delta_lstm_cell.h"

namespace loom {

using cpu::dot;
using cpu::parallel_for;

namespace {

constexpr int64_t kGates = 3;

struct Dims {
  int64_t L = 0, S = 0, D = 0;  // S = B·H sequences
};

Dims dims_of(const Tensor& z) { return {z.size(0), z.size(1) * z.size(2), z.size(4)}; }

// The inputs and the forward's saved tensors, as raw pointers.
template <class T>
struct Operands {
  const T *z, *rk, *rv, *gamma, *R0, *h0, *c0;
  Dims d;
  int64_t step(int64_t t, int64_t s) const { return t * d.S + s; }  // row of [L, B, H, *]
};

template <class T>
void forward_sequences(const Operands<T>& in, T* h, T* cell, T* vbar, T* R_last, T* h_last, T* c_last) {
  const int64_t L = in.d.L, S = in.d.S, D = in.d.D, RN = kGates * D * D;
  // Work per sequence: two passes over the three R_g per step.
  parallel_for(S, 6 * L * D * D, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(R_last ? 0 : RN), h_prev(D), c_prev(D), sm(D), a(kGates * D);
    for (int64_t s = begin; s < end; ++s) {
      // R lives in the final-state slot when there is one: nothing to copy at the end.
      T* R = R_last ? R_last + s * RN : scratch.data();
      if (in.R0) std::memcpy(R, in.R0 + s * RN, sizeof(T) * RN);
      else std::fill(R, R + RN, T(0));
      for (int64_t j = 0; j < D; ++j) {
        h_prev[j] = in.h0 ? in.h0[s * D + j] : T(0);
        c_prev[j] = in.c0 ? in.c0[s * D + j] : T(0);
      }
      for (int64_t t = 0; t < L; ++t) {
        const int64_t row = in.step(t, s);
        cpu::softmax_row(h_prev.data(), sm.data(), D);
        for (int64_t g = 0; g < kGates; ++g) {
          const int64_t gr = row * kGates + g;  // this gate's row of [L, B, H, 3, *]
          const T* rk = in.rk + gr * D;
          const T* rv = in.rv + gr * D;
          const T* z = in.z + gr * D;
          const T gamma = in.gamma[gr];
          T* Rg = R + g * D * D;
          for (int64_t i = 0; i < D; ++i) {
            T* Ri = Rg + i * D;
            const T vb = dot(Ri, rk, D);
            if (vbar) vbar[gr * D + i] = vb;
            const T delta = gamma * (rv[i] - vb);
            T acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < D; ++j) {
              const T rn = Ri[j] + delta * rk[j];
              Ri[j] = rn;
              acc += rn * sm[j];
            }
            a[g * D + i] = z[i] + acc;
          }
        }
        for (int64_t i = 0; i < D; ++i) {
          T c, hv;
          delta_lstm_cell::forward(a[i], a[D + i], a[2 * D + i], c_prev[i], c, hv);
          h[row * D + i] = hv;
          if (cell) cell[row * D + i] = c;
          c_prev[i] = c;
          h_prev[i] = hv;
        }
      }
      if (h_last) std::copy(h_prev.begin(), h_prev.end(), h_last + s * D);
      if (c_last) std::copy(c_prev.begin(), c_prev.end(), c_last + s * D);
    }
  });
}

template <class T>
struct Saved {
  const T *h, *cell, *vbar, *R_last;
};

template <class T>
struct GradOut {
  T *z, *rk, *rv, *gamma;
};

template <class T>
void backward_sequences(const T* g_out, const Operands<T>& in, const Saved<T>& sv, const GradOut<T>& gr_out) {
  const int64_t L = in.d.L, S = in.d.S, D = in.d.D, RN = kGates * D * D;
  // Work per sequence: about five passes over the three R_g per step.
  parallel_for(S, 15 * L * D * D, [&](int64_t begin, int64_t end) {
    std::vector<T> R(RN), G(RN), dh_next(D), dc_next(D), sm(D), ds(D), zeros(D, T(0));
    for (int64_t s = begin; s < end; ++s) {
      std::memcpy(R.data(), sv.R_last + s * RN, sizeof(T) * RN);
      std::fill(G.begin(), G.end(), T(0));
      std::fill(dh_next.begin(), dh_next.end(), T(0));
      std::fill(dc_next.begin(), dc_next.end(), T(0));
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t row = in.step(t, s);
        const T* h_prev = t > 0 ? sv.h + in.step(t - 1, s) * D : in.h0 ? in.h0 + s * D : zeros.data();
        const T* c_prev = t > 0 ? sv.cell + in.step(t - 1, s) * D : in.c0 ? in.c0 + s * D : zeros.data();
        const T* c = sv.cell + row * D;
        cpu::softmax_row(h_prev, sm.data(), D);
        std::fill(ds.begin(), ds.end(), T(0));
        T* dz = gr_out.z + row * kGates * D;  // [3, D]: da_g = dz_g
        T* drk = gr_out.rk + row * kGates * D;
        std::fill(drk, drk + kGates * D, T(0));
        // The gates from R_g,t, then the cell's backward, element by element.
        for (int64_t i = 0; i < D; ++i) {
          T a[kGates];
          for (int64_t g = 0; g < kGates; ++g)
            a[g] = in.z[(row * kGates + g) * D + i] + dot(R.data() + (g * D + i) * D, sm.data(), D);
          const auto d = delta_lstm_cell::backward(a[0], a[1], a[2], c_prev[i], c[i], g_out[row * D + i] + dh_next[i],
                                                   dc_next[i]);
          dz[i] = d.da0;
          dz[D + i] = d.da1;
          dz[2 * D + i] = d.da2;
          dc_next[i] = d.dc_prev;
        }
        for (int64_t g = 0; g < kGates; ++g) {
          const int64_t gr = row * kGates + g;
          const T* rk = in.rk + gr * D;
          const T* rv = in.rv + gr * D;
          const T* vb = sv.vbar + gr * D;
          const T gamma = in.gamma[gr];
          T* drkg = drk + g * D;
          T dgamma = 0;
          for (int64_t i = 0; i < D; ++i) {
            T* Ri = R.data() + (g * D + i) * D;
            T* Gi = G.data() + (g * D + i) * D;
            const T da = dz[g * D + i];
            // G += da sᵀ;  ds += R_tᵀ da;  dδ = G k.
            T ddelta = 0;
#pragma omp simd reduction(+ : ddelta)
            for (int64_t j = 0; j < D; ++j) {
              const T gn = Gi[j] + da * sm[j];
              Gi[j] = gn;
              ds[j] += da * Ri[j];
              ddelta += gn * rk[j];
            }
            const T diff = rv[i] - vb[i];
            const T delta = gamma * diff;  // the forward's expression: the same bits
            const T cc = -gamma * ddelta;
            gr_out.rv[gr * D + i] = gamma * ddelta;
            dgamma += diff * ddelta;
            // drk += δ G (the write);  R -= δ rkᵀ;  drk += c R_{t-1} (the read);  G += c rkᵀ.
#pragma omp simd
            for (int64_t j = 0; j < D; ++j) {
              T dk = drkg[j] + delta * Gi[j];
              const T rn = Ri[j] - delta * rk[j];
              Ri[j] = rn;
              drkg[j] = dk + cc * rn;
              Gi[j] += cc * rk[j];
            }
          }
          gr_out.gamma[gr] = dgamma;
        }
        // Through s_t = softmax(h_{t-1}) to the previous step's h.
        const T sds = dot(sm.data(), ds.data(), D);
        for (int64_t j = 0; j < D; ++j) dh_next[j] = sm[j] * (ds[j] - sds);
      }
    }
  });
}

}  // namespace

void CpuBackend::delta_lstm(const Tensor& z, const Tensor& rk, const Tensor& rv, const Tensor& gamma,
                            const Tensor& initial_R, const Tensor& initial_h, const Tensor& initial_c,
                            const Tensor& out, const Tensor& cell, const Tensor& vbar, const Tensor& final_R,
                            const Tensor& final_h, const Tensor& final_c) {
  dispatch_float(z.dtype(), "delta_lstm", [&](auto zero) {
    using T = decltype(zero);
    const Tensor zc = dense(z), kc = dense(rk), vc = dense(rv), gc = dense(gamma), R0 = dense(initial_R),
                 h0 = dense(initial_h), c0 = dense(initial_c);
    const Operands<T> in{zc.data<T>(),  kc.data<T>(), vc.data<T>(), gc.data<T>(), data_or_null<const T>(R0),
                         data_or_null<const T>(h0), data_or_null<const T>(c0), dims_of(z)};
    forward_sequences<T>(in, out.data<T>(), data_or_null<T>(cell), data_or_null<T>(vbar), data_or_null<T>(final_R),
                         data_or_null<T>(final_h), data_or_null<T>(final_c));
  });
}

void CpuBackend::delta_lstm_backward(const Tensor& grad_out, const Tensor& z, const Tensor& rk, const Tensor& rv,
                                     const Tensor& gamma, const Tensor& initial_h, const Tensor& initial_c,
                                     const Tensor& out, const Tensor& cell, const Tensor& vbar,
                                     const Tensor& final_R, const Tensor& grad_z, const Tensor& grad_rk,
                                     const Tensor& grad_rv, const Tensor& grad_gamma) {
  dispatch_float(z.dtype(), "delta_lstm_backward", [&](auto zero) {
    using T = decltype(zero);
    const Tensor g = dense(grad_out), zc = dense(z), kc = dense(rk), vc = dense(rv), gc = dense(gamma),
                 h0 = dense(initial_h), c0 = dense(initial_c), hc = dense(out), cc = dense(cell), vb = dense(vbar),
                 Rl = dense(final_R);
    const Operands<T> in{zc.data<T>(), kc.data<T>(), vc.data<T>(), gc.data<T>(), nullptr,
                         data_or_null<const T>(h0), data_or_null<const T>(c0), dims_of(z)};
    const Saved<T> saved{hc.data<T>(), cc.data<T>(), vb.data<T>(), Rl.data<T>()};
    backward_sequences<T>(g.data<T>(), in, saved,
                          {grad_z.data<T>(), grad_rk.data<T>(), grad_rv.data<T>(), grad_gamma.data<T>()});
  });
}

}  // namespace loom
