// delta_rnn.cpp: CPU kernels of the Delta RNN's recurrence (ops.h).
//
// Tensors are sequence-first and contiguous: element (t, s, c) of z [L, B, H, D]
// lies at (t·S + s)·D + c, with s = b·H + h one of S = B·H independent
// sequences. Each sequence is one task (OpenMP over S): it walks time with its
// recurrent fast weight R [D, D] in a private buffer (64×64 floats = 16 KB: it
// stays in L1/L2 for the whole walk).
//
// Forward, per step t: s_t = softmax(y_{t-1}) (max-subtracted), then per row i
// of R, while the row is in L1:
//   vbar_i = R[i]·rk_t;  u_i = gamma_t (rv_t[i] - vbar_i);  R[i] += u_i rk_t;
//   y_t[i] = z_t[i] + R[i]·s_t
//
// Rows go one at a time, each a vectorised dot product and a fused
// update-and-read. delta_rule.cpp's blocks of 8 rows sharing each load of the
// key and query were tried here and measured slower at the Delta RNN's head
// sizes: minimum CPU time of build/tests/bench_delta_rnn, 1 thread, AVX-512, float32,
// one row at a time against blocks of 8 (the machine was shared and noisy):
//   D = 16  (bench_delta_rnn 512 16 16 16):  forward 45 vs 62 ms, backward 67 vs 101 ms
//   D = 64  (bench_delta_rnn 256 8 8 64):    forward 23 vs 34 ms, backward 47 vs 66 ms
//   D = 128 (bench_delta_rnn 128 4 8 128):   forward 19 vs 15 ms, backward 36 vs 42 ms
//
// The backward sweeps time in reverse with two D×D buffers: R (starting at the
// saved R_L, rebuilt as R_{t-1} = R_t - u_t rk_tᵀ) and G = dL/dR_t (starting at
// 0), and a vector gy = dL/dy_t carried from step t+1 (through s_{t+1}). Per
// step, with ĝ = grad_out_t + gy and s_t recomputed from the saved y_{t-1}:
//   dz_t = ĝ
//   per row i:
//     G[i] += ĝ_i s_t                      (y_t = z_t + R_t s_t)
//     ds   += ĝ_i R_t[i]
//     du_i  = G[i]·rk_t                    (dL/du_t[i])
//     drv_t[i] = gamma du_i;  dgamma_t += (rv_t[i] - vbar_t[i]) du_i;  c_i = -gamma du_i
//     drk_t += u_i G[i]                    (the write R += u rkᵀ)
//     R[i]  -= u_i rk_t                    (now R_{t-1}[i])
//     drk_t += c_i R_{t-1}[i]              (the read vbar = R_{t-1} rk)
//     G[i]  += c_i rk_t                    (now dL/dR_{t-1}[i])
//   gy = s_t ⊙ (ds - s_t·ds)               (softmax's backward: dL/dy_{t-1})
// At t = 1 gy would be the gradient of initial_y, which gets none: it is dropped.
// u_t is recomputed from the saved vbar with the forward's own expression, so it
// has the forward's bits; only the subtraction that rebuilds R rounds.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"
#include "engine/cpu/row_math.h"

namespace loom {

using cpu::dot;
using cpu::parallel_for;

namespace {

struct Dims {
  int64_t L = 0, S = 0, D = 0;  // S = B·H sequences
};

Dims dims_of(const Tensor& z) { return {z.size(0), z.size(1) * z.size(2), z.size(3)}; }

// s = softmax(y) over n entries, max-subtracted; y == nullptr means y = 0 (s uniform).
template <class T>
void softmax_of(const T* y, T* s, int64_t n) {
  if (y) cpu::softmax_row(y, s, n);
  else std::fill(s, s + n, T(1) / static_cast<T>(n));
}

// y_{t-1} of sequence s at step t: the previous output row, initial_y, or null (zeros).
template <class T>
const T* previous_y(const T* y, const T* y0, int64_t t, int64_t s, const Dims& d) {
  if (t > 0) return y + ((t - 1) * d.S + s) * d.D;
  return y0 ? y0 + s * d.D : nullptr;
}

template <class T>
void forward_sequences(const T* z, const T* rk, const T* rv, const T* gamma, const T* r0, const T* y0, T* y,
                       T* r_last, T* vbar, const Dims& d) {
  const int64_t L = d.L, S = d.S, D = d.D;
  // Work per sequence: three passes of D·D per step.
  parallel_for(S, 3 * L * D * D, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(r_last ? 0 : D * D), soft(D);
    for (int64_t s = begin; s < end; ++s) {
      // R lives in the final-state slot when there is one: nothing to copy at the end.
      T* R = r_last ? r_last + s * D * D : scratch.data();
      if (r0) std::memcpy(R, r0 + s * D * D, sizeof(T) * D * D);
      else std::fill(R, R + D * D, T(0));
      for (int64_t t = 0; t < L; ++t) {
        const int64_t row = t * S + s;
        softmax_of(previous_y(y, y0, t, s, d), soft.data(), D);
        const T* kt = rk + row * D;
        const T* vt = rv + row * D;
        const T* zt = z + row * D;
        T* yt = y + row * D;
        const T g = gamma[row];
        for (int64_t i = 0; i < D; ++i) {
          T* ri = R + i * D;
          const T vb = dot(ri, kt, D);
          if (vbar) vbar[row * D + i] = vb;
          const T u = g * (vt[i] - vb);
          T acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int64_t j = 0; j < D; ++j) {
            const T rn = ri[j] + u * kt[j];
            ri[j] = rn;
            acc += rn * soft[j];
          }
          yt[i] = zt[i] + acc;
        }
      }
    }
  });
}

template <class T>
void backward_sequences(const T* grad, const T* rk, const T* rv, const T* gamma, const T* y0, const T* y,
                        const T* vbar, const T* r_last, T* gz, T* grk, T* grv, T* ggamma, const Dims& d) {
  const int64_t L = d.L, S = d.S, D = d.D;
  // Work per sequence: about seven passes of D·D per step.
  parallel_for(S, 7 * L * D * D, [&](int64_t begin, int64_t end) {
    std::vector<T> R(D * D), G(D * D), soft(D), ds(D), gy(D), u(D), c(D);
    for (int64_t s = begin; s < end; ++s) {
      std::memcpy(R.data(), r_last + s * D * D, sizeof(T) * D * D);
      std::fill(G.begin(), G.end(), T(0));
      std::fill(gy.begin(), gy.end(), T(0));
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t row = t * S + s;
        const T* kt = rk + row * D;
        const T* vt = rv + row * D;
        const T* vbt = vbar + row * D;
        const T* gt = grad + row * D;
        T* dz = gz + row * D;
        T* dk = grk + row * D;
        T* dv = grv + row * D;
        softmax_of(previous_y(y, y0, t, s, d), soft.data(), D);
        for (int64_t i = 0; i < D; ++i) dz[i] = gt[i] + gy[i];
        std::fill(ds.begin(), ds.end(), T(0));
        std::fill(dk, dk + D, T(0));
        const T g = gamma[row];
        T dgamma = 0;
        for (int64_t i = 0; i < D; ++i) {
          T* ri = R.data() + i * D;
          T* gi = G.data() + i * D;
          const T ghat = dz[i];
          T du = 0;
#pragma omp simd reduction(+ : du)
          for (int64_t j = 0; j < D; ++j) {
            const T gn = gi[j] + ghat * soft[j];
            gi[j] = gn;
            ds[j] += ghat * ri[j];
            du += gn * kt[j];
          }
          const T diff = vt[i] - vbt[i];
          const T ui = g * diff;  // the forward's expression: the same bits
          const T ci = -g * du;
          dv[i] = g * du;
          dgamma += diff * du;
#pragma omp simd
          for (int64_t j = 0; j < D; ++j) {
            dk[j] += ui * gi[j];
            const T rn = ri[j] - ui * kt[j];
            ri[j] = rn;
            dk[j] += ci * rn;
            gi[j] += ci * kt[j];
          }
        }
        ggamma[row] = dgamma;
        // dL/dy_{t-1} through s_t = softmax(y_{t-1}).
        const T sds = dot(soft.data(), ds.data(), D);
        for (int64_t j = 0; j < D; ++j) gy[j] = soft[j] * (ds[j] - sds);
      }
    }
  });
}

}  // namespace

void CpuBackend::delta_rnn(const Tensor& z, const Tensor& rk, const Tensor& rv, const Tensor& gamma,
                           const Tensor& initial_R, const Tensor& initial_y, const Tensor& out, const Tensor& final_R,
                           const Tensor& vbar) {
  dispatch_float(z.dtype(), "delta_rnn", [&](auto zero) {
    using T = decltype(zero);
    const Tensor zc = dense(z), kc = dense(rk), vc = dense(rv), gc = dense(gamma), r0 = dense(initial_R),
                 y0 = dense(initial_y);
    forward_sequences<T>(zc.data<T>(), kc.data<T>(), vc.data<T>(), gc.data<T>(), data_or_null<const T>(r0),
                         data_or_null<const T>(y0), out.data<T>(), data_or_null<T>(final_R), data_or_null<T>(vbar),
                         dims_of(z));
  });
}

void CpuBackend::delta_rnn_backward(const Tensor& grad_out, const Tensor& rk, const Tensor& rv, const Tensor& gamma,
                                    const Tensor& initial_y, const Tensor& out, const Tensor& vbar,
                                    const Tensor& final_R, const Tensor& grad_z, const Tensor& grad_rk,
                                    const Tensor& grad_rv, const Tensor& grad_gamma) {
  dispatch_float(rk.dtype(), "delta_rnn_backward", [&](auto zero) {
    using T = decltype(zero);
    const Tensor g = dense(grad_out), kc = dense(rk), vc = dense(rv), gc = dense(gamma), y0 = dense(initial_y),
                 yc = dense(out), vb = dense(vbar), rl = dense(final_R);
    backward_sequences<T>(g.data<T>(), kc.data<T>(), vc.data<T>(), gc.data<T>(), data_or_null<const T>(y0),
                          yc.data<T>(), vb.data<T>(), rl.data<T>(), grad_z.data<T>(), grad_rk.data<T>(),
                          grad_rv.data<T>(), grad_gamma.data<T>(), dims_of(rk));
  });
}

}  // namespace loom
