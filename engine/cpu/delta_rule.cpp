// delta_rule.cpp: CPU kernels of the fast-weight recurrence (delta and sum rule).
//
// Tensors are sequence-first and contiguous: element (t, s, c) of q [L, B, H, Dk]
// lies at (t·S + s)·Dk + c, with s = b·H + h one of S = B·H independent
// sequences. Each sequence is one task (OpenMP over S): it walks time with its
// fast weight W [Dv, Dk] in a private buffer (64×128 floats = 32 KB: it stays in
// L1/L2 for the whole walk) and reads q, k, v, beta one step at a time.
//
// Row i of W evolves on its own: with u_t[i] = beta_t (v_t[i] - W[i]·k_t) (delta)
// or v_t[i] (sum), W[i] += u_t[i] k_t and y_t[i] = W[i]·q_t. So each step is one
// sweep over the rows, in blocks of 8 rows that share each load of k_t and q_t:
// two passes over a block (vbar, then write and read out) while it is in L1.
//
// The backward sweeps time in reverse with two Dv×Dk buffers: W (starting at the
// saved W_L, rebuilt as W_{t-1} = W_t - u_t k_tᵀ) and G = dL/dW_t (starting at 0).
// Per step and row i, with ĝ = dL/dy_t:
//   G[i] += ĝ[i] q_t                      (y_t = W_t q_t)
//   dq_t += ĝ[i] W_t[i]
//   du_i  = G[i]·k_t                      (dL/du_t[i])
//   dv_t[i] = beta du_i;  dbeta_t += (v_t[i] - vbar_t[i]) du_i;  c_i = -beta du_i = dL/dvbar_t[i]
//   dk_t += u_t[i] G[i]                   (the write W += u kᵀ)
//   W[i] -= u_t[i] k_t                    (now W_{t-1}[i])
//   dk_t += c_i W_{t-1}[i]                (the read vbar = W_{t-1} k)
//   G[i] += c_i k_t                       (now dL/dW_{t-1}[i])
// For the sum rule u = v, dv_t[i] = du_i and c = 0. u_t is recomputed from the
// saved vbar with the forward's own expression, so it is bit-identical to the
// forward's; only the subtraction that rebuilds W rounds.
#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"

// 512-bit vectors where the target has AVX-512 (the 64-byte accumulator of a row
// is then one register instead of two; GCC's default tuning prefers 256-bit).
// Only a tuning preference: on an AVX2-only target the code is unchanged, and the
// results are the same bits either way (each lane sums in the same order).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("prefer-vector-width=512")
#endif

namespace loom {

using cpu::parallel_for;

namespace {

struct Dims {
  int64_t L = 0, S = 0, Dk = 0, Dv = 0;  // S = B·H sequences
};

Dims dims_of(const Tensor& q, const Tensor& v) {
  return {q.size(0), q.size(1) * q.size(2), q.size(3), v.size(3)};
}

// Lanes of one 64-byte vector: accumulators are kept as [R][kLanes] arrays, which
// the compiler holds in vector registers, so R rows give R·(one vector)
// independent sums and each load of k and q serves R rows.
template <class T>
constexpr int64_t kLanes = 64 / sizeof(T);

// Rows of W handled together (8 vectors of partial sums in flight; 4 measured the
// same for the backward, 8 about 20% faster for the forward).
constexpr int kRows = 8;

template <class T, int R>
void sum_lanes(const T (&acc)[R][kLanes<T>], T* out) {
  for (int r = 0; r < R; ++r) {
    T s = 0;
    for (int64_t l = 0; l < kLanes<T>; ++l) s += acc[r][l];
    out[r] = s;
  }
}

// out[r] = w[r]·x for R rows.
template <class T, int R>
void dot_rows(T* const (&w)[R], const T* x, int64_t n, T* out) {
  constexpr int64_t V = kLanes<T>;
  T acc[R][V] = {};
  int64_t j = 0;
  for (; j + V <= n; j += V)
    for (int r = 0; r < R; ++r)
#pragma omp simd
      for (int64_t l = 0; l < V; ++l) acc[r][l] += w[r][j + l] * x[j + l];
  for (; j < n; ++j)
    for (int r = 0; r < R; ++r) acc[r][0] += w[r][j] * x[j];
  sum_lanes<T, R>(acc, out);
}

// One step for rows [i, i+R) of W: vbar = W k, u = beta (v - vbar) (or v),
// W += u kᵀ, y = W q.
template <class T, int R>
void forward_rows(T* W, int64_t i, const T* qt, const T* kt, const T* vt, T b, bool delta, T* yt, T* vbt,
                  int64_t Dk) {
  constexpr int64_t V = kLanes<T>;
  T* w[R];
  T u[R];
  for (int r = 0; r < R; ++r) {
    w[r] = W + (i + r) * Dk;
    u[r] = vt[i + r];
  }
  if (delta) {
    T vb[R];
    dot_rows<T, R>(w, kt, Dk, vb);
    for (int r = 0; r < R; ++r) {
      if (vbt) vbt[i + r] = vb[r];
      u[r] = b * (vt[i + r] - vb[r]);
    }
  }
  T acc[R][V] = {};
  int64_t j = 0;
  for (; j + V <= Dk; j += V)
    for (int r = 0; r < R; ++r)
#pragma omp simd
      for (int64_t l = 0; l < V; ++l) {
        const T wn = w[r][j + l] + u[r] * kt[j + l];
        w[r][j + l] = wn;
        acc[r][l] += wn * qt[j + l];
      }
  for (; j < Dk; ++j)
    for (int r = 0; r < R; ++r) {
      w[r][j] += u[r] * kt[j];
      acc[r][0] += w[r][j] * qt[j];
    }
  sum_lanes<T, R>(acc, yt + i);
}

template <class T>
void forward_sequences(const T* q, const T* k, const T* v, const T* beta, const T* w0, T* y, T* w_last, T* vbar,
                       const Dims& d) {
  const int64_t L = d.L, S = d.S, Dk = d.Dk, Dv = d.Dv;
  constexpr int R = kRows;
  // Work per sequence: three passes of Dv·Dk per step.
  parallel_for(S, 3 * L * Dv * Dk, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(w_last ? 0 : Dv * Dk);
    for (int64_t s = begin; s < end; ++s) {
      // W lives in the final-state slot when there is one: nothing to copy at the end.
      T* W = w_last ? w_last + s * Dv * Dk : scratch.data();
      if (w0) std::memcpy(W, w0 + s * Dv * Dk, sizeof(T) * Dv * Dk);
      else std::fill(W, W + Dv * Dk, T(0));
      for (int64_t t = 0; t < L; ++t) {
        const int64_t row = t * S + s;
        const T* qt = q + row * Dk;
        const T* kt = k + row * Dk;
        const T* vt = v + row * Dv;
        T* yt = y + row * Dv;
        T* vbt = vbar ? vbar + row * Dv : nullptr;
        const T b = beta ? beta[row] : T(1);
        int64_t i = 0;
        for (; i + R <= Dv; i += R) forward_rows<T, R>(W, i, qt, kt, vt, b, beta, yt, vbt, Dk);
        for (; i < Dv; ++i) forward_rows<T, 1>(W, i, qt, kt, vt, b, beta, yt, vbt, Dk);
      }
    }
  });
}

// One reverse step for rows [i, i+R) of W (= W_t on entry, W_{t-1} on return) and
// G (= dL/dW_t without this step's readout on entry, dL/dW_{t-1} on return).
// Accumulates into dq, dk; writes dv[i..i+R) and returns this block's share of dbeta.
template <class T, int R, bool Delta>
T backward_rows(T* W, T* G, int64_t i, const T* qt, const T* kt, const T* vt, const T* gt, const T* vbt, T b, T* dq,
                T* dk, T* dv, int64_t Dk) {
  constexpr int64_t V = kLanes<T>;
  T* w[R];
  T* g[R];
  T gi[R];
  for (int r = 0; r < R; ++r) {
    w[r] = W + (i + r) * Dk;
    g[r] = G + (i + r) * Dk;
    gi[r] = gt[i + r];
  }
  // G += ĝ qᵀ;  dq += W_tᵀ ĝ;  du = G k.
  T acc[R][V] = {};
  int64_t j = 0;
  for (; j + V <= Dk; j += V) {
    T dql[V];
    for (int64_t l = 0; l < V; ++l) dql[l] = dq[j + l];
    for (int r = 0; r < R; ++r)
#pragma omp simd
      for (int64_t l = 0; l < V; ++l) {
        const T gn = g[r][j + l] + gi[r] * qt[j + l];
        g[r][j + l] = gn;
        dql[l] += gi[r] * w[r][j + l];
        acc[r][l] += gn * kt[j + l];
      }
    for (int64_t l = 0; l < V; ++l) dq[j + l] = dql[l];
  }
  for (; j < Dk; ++j)
    for (int r = 0; r < R; ++r) {
      g[r][j] += gi[r] * qt[j];
      dq[j] += gi[r] * w[r][j];
      acc[r][0] += g[r][j] * kt[j];
    }
  T du[R];
  sum_lanes<T, R>(acc, du);

  T u[R], c[R], dbeta = 0;
  for (int r = 0; r < R; ++r) {
    if (Delta) {
      const T diff = vt[i + r] - vbt[i + r];
      u[r] = b * diff;  // the forward's expression: the same bits
      c[r] = -b * du[r];
      dv[i + r] = b * du[r];
      dbeta += diff * du[r];
    } else {
      u[r] = vt[i + r];
      c[r] = 0;
      dv[i + r] = du[r];
    }
  }
  // dk += Gᵀ u (the write);  W -= u kᵀ;  dk += W_{t-1}ᵀ c (the read);  G += c kᵀ.
  auto second = [&](int64_t jj, T& dkj, int r) {
    dkj += u[r] * g[r][jj];
    const T wn = w[r][jj] - u[r] * kt[jj];
    w[r][jj] = wn;
    if (Delta) {
      dkj += c[r] * wn;
      g[r][jj] += c[r] * kt[jj];
    }
  };
  j = 0;
  for (; j + V <= Dk; j += V) {
    T dkl[V];
    for (int64_t l = 0; l < V; ++l) dkl[l] = dk[j + l];
    for (int r = 0; r < R; ++r)
#pragma omp simd
      for (int64_t l = 0; l < V; ++l) second(j + l, dkl[l], r);
    for (int64_t l = 0; l < V; ++l) dk[j + l] = dkl[l];
  }
  for (; j < Dk; ++j)
    for (int r = 0; r < R; ++r) second(j, dk[j], r);
  return dbeta;
}

// One reverse step over all rows (blocks of kRows, then single rows); returns dbeta_t.
template <class T, bool Delta>
T backward_step(T* W, T* G, const T* qt, const T* kt, const T* vt, const T* gt, const T* vbt, T b, T* dq, T* dk,
                T* dv, int64_t Dk, int64_t Dv) {
  T dbeta = 0;
  int64_t i = 0;
  for (; i + kRows <= Dv; i += kRows)
    dbeta += backward_rows<T, kRows, Delta>(W, G, i, qt, kt, vt, gt, vbt, b, dq, dk, dv, Dk);
  for (; i < Dv; ++i) dbeta += backward_rows<T, 1, Delta>(W, G, i, qt, kt, vt, gt, vbt, b, dq, dk, dv, Dk);
  return dbeta;
}

template <class T>
void backward_sequences(const T* g, const T* q, const T* k, const T* v, const T* beta, const T* vbar,
                        const T* w_last, T* gq, T* gk, T* gv, T* gbeta, const Dims& d) {
  const int64_t L = d.L, S = d.S, Dk = d.Dk, Dv = d.Dv;
  // Work per sequence: about seven passes of Dv·Dk per step.
  parallel_for(S, 7 * L * Dv * Dk, [&](int64_t begin, int64_t end) {
    std::vector<T> W(Dv * Dk), G(Dv * Dk);
    for (int64_t s = begin; s < end; ++s) {
      std::memcpy(W.data(), w_last + s * Dv * Dk, sizeof(T) * Dv * Dk);
      std::fill(G.begin(), G.end(), T(0));
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t row = t * S + s;
        const T* qt = q + row * Dk;
        const T* kt = k + row * Dk;
        const T* vt = v + row * Dv;
        const T* gt = g + row * Dv;
        const T* vbt = beta ? vbar + row * Dv : nullptr;
        T* dq = gq + row * Dk;
        T* dk = gk + row * Dk;
        T* dv = gv + row * Dv;
        std::fill(dq, dq + Dk, T(0));
        std::fill(dk, dk + Dk, T(0));
        const T b = beta ? beta[row] : T(1);
        const T dbeta = beta ? backward_step<T, true>(W.data(), G.data(), qt, kt, vt, gt, vbt, b, dq, dk, dv, Dk, Dv)
                             : backward_step<T, false>(W.data(), G.data(), qt, kt, vt, gt, vbt, b, dq, dk, dv, Dk, Dv);
        if (beta) gbeta[row] = dbeta;
      }
    }
  });
}

}  // namespace

void CpuBackend::delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta,
                            const Tensor& initial_state, const Tensor& out, const Tensor& final_state,
                            const Tensor& vbar) {
  dispatch_float(q.dtype(), "delta_rule", [&](auto zero) {
    using T = decltype(zero);
    const Tensor qc = dense(q), kc = dense(k), vc = dense(v), bc = dense(beta), w0 = dense(initial_state);
    forward_sequences<T>(qc.data<T>(), kc.data<T>(), vc.data<T>(), data_or_null<const T>(bc), data_or_null<const T>(w0),
                         out.data<T>(), data_or_null<T>(final_state), data_or_null<T>(vbar), dims_of(q, v));
  });
}

void CpuBackend::delta_rule_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& beta, const Tensor& vbar, const Tensor& final_state,
                                     const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v,
                                     const Tensor& grad_beta) {
  dispatch_float(q.dtype(), "delta_rule_backward", [&](auto zero) {
    using T = decltype(zero);
    const Tensor g = dense(grad_out), qc = dense(q), kc = dense(k), vc = dense(v), bc = dense(beta),
                 vb = dense(vbar), wl = dense(final_state);
    backward_sequences<T>(g.data<T>(), qc.data<T>(), kc.data<T>(), vc.data<T>(), data_or_null<const T>(bc),
                          data_or_null<const T>(vb), wl.data<T>(), grad_q.data<T>(), grad_k.data<T>(), grad_v.data<T>(),
                          data_or_null<T>(grad_beta), dims_of(q, v));
  });
}

}  // namespace loom

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
