// delta_rule.cu: CUDA kernels of the fast-weight recurrence (delta and sum rule).
//
// The CPU's algorithm (engine/cpu/delta_rule.cpp) with one thread block per
// sequence s = b·H + h: the block keeps its fast weight W [Dv, Dk] in shared
// memory and walks time inside the kernel, reading q, k, v, beta one step at a
// time (contiguous tensors; element (t, s, c) of q lies at (t·S + s)·Dk + c).
//
// Forward, per step: warp w owns rows i ≡ w (mod warps) of W, so each row's
//   vbar_i = W[i]·k,  u_i = beta (v_i - vbar_i)  (sum rule: v_i),
//   W[i] += u_i k,    y_i = W[i]·q
// is one warp's work with no block synchronisation inside the step.
//
// Backward, in reverse time from the saved W_L, with G = dL/dW (from 0):
//   phase 1 (warp per row i):   G[i] += ĝ_i q;  du_i = G[i]·k;  u_i, c_i = -beta du_i,
//                               dv_i = beta du_i (sum rule: u_i = v_i, c_i = 0, dv_i = du_i)
//   phase 2 (thread per column j, over all rows in order):
//                               dq_j = Σ_i ĝ_i W_t[i, j];  dk_j = Σ_i u_i G[i, j] + c_i W_{t-1}[i, j],
//                               W[i, j] -= u_i k_j (now W_{t-1});  G[i, j] += c_i k_j
// u_i is recomputed from the saved vbar with the forward's own expression, so it
// has the forward's bits; only the subtraction that rebuilds W rounds. Every
// output is written by one thread (dbeta: per-warp partials added in warp
// order), so the results have the same bits on every run.
//
// Shared memory: W (forward), W and G (backward), plus a few rows. For Dv = 64,
// Dk = 128 in float32 that is 32 KiB and 64 KiB; past 48 KiB the kernels opt in to
// more (up to 227 KiB per block on H100), and sizes beyond the GPU's limit are
// refused with an error naming them.
#include "cuda/block.cuh"
#include "cuda/cuda_backend.h"

namespace loom::cuda {

namespace {

struct Dims {
  int64_t L = 0, S = 0, Dk = 0, Dv = 0;  // S = B·H sequences
};

Dims dims_of(const Tensor& q, const Tensor& v) { return {q.size(0), q.size(1) * q.size(2), q.size(3), v.size(3)}; }

constexpr int kThreads = kBlockThreads;
constexpr int kWarps = kThreads / kWarp;

// Shared memory: W [Dv, Dk], q [Dk], k [Dk], v [Dv].
template <class T>
__global__ void delta_rule_forward_kernel(const T* q, const T* k, const T* v, const T* beta, const T* w0, T* y,
                                          T* w_last, T* vbar, Dims d) {
  const int64_t L = d.L, S = d.S, Dk = d.Dk, Dv = d.Dv, WN = Dv * Dk;
  T* W = dynamic_shared<T>();
  T* sq = W + WN;
  T* sk = sq + Dk;
  T* sv = sk + Dk;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int64_t s = blockIdx.x; s < S; s += gridDim.x) {
    __syncthreads();  // the previous sequence has written W out
    for (int64_t e = threadIdx.x; e < WN; e += blockDim.x) W[e] = w0 ? w0[s * WN + e] : T(0);
    for (int64_t t = 0; t < L; ++t) {
      const int64_t row = t * S + s;
      __syncthreads();  // the previous step is done with sq, sk, sv (and W is initialised)
      for (int64_t j = threadIdx.x; j < Dk; j += blockDim.x) {
        sq[j] = q[row * Dk + j];
        sk[j] = k[row * Dk + j];
      }
      for (int64_t i = threadIdx.x; i < Dv; i += blockDim.x) sv[i] = v[row * Dv + i];
      __syncthreads();
      const T b = beta ? beta[row] : T(1);
      for (int64_t i = warp; i < Dv; i += kWarps) {  // the same trip count on every lane
        T* wi = W + i * Dk;
        T u = sv[i];
        if (beta) {
          T acc = 0;
          for (int64_t j = lane; j < Dk; j += kWarp) acc += wi[j] * sk[j];
          const T vb = warp_reduce(acc, SumOp<T>{});
          if (vbar && lane == 0) vbar[row * Dv + i] = vb;
          u = b * (sv[i] - vb);
        }
        T acc = 0;
        for (int64_t j = lane; j < Dk; j += kWarp) {
          const T wn = wi[j] + u * sk[j];
          wi[j] = wn;
          acc += wn * sq[j];
        }
        acc = warp_reduce(acc, SumOp<T>{});
        if (lane == 0) y[row * Dv + i] = acc;
      }
    }
    __syncthreads();
    if (w_last)
      for (int64_t e = threadIdx.x; e < WN; e += blockDim.x) w_last[s * WN + e] = W[e];
  }
}

// Shared memory: W, G [Dv, Dk]; q, k [Dk]; v, ĝ, vbar, u, c [Dv]; dbeta partials [kWarps].
template <class T>
__global__ void delta_rule_backward_kernel(const T* g, const T* q, const T* k, const T* v, const T* beta,
                                           const T* vbar, const T* w_last, T* gq, T* gk, T* gv, T* gbeta, Dims d) {
  const int64_t L = d.L, S = d.S, Dk = d.Dk, Dv = d.Dv, WN = Dv * Dk;
  T* W = dynamic_shared<T>();
  T* G = W + WN;
  T* sq = G + WN;
  T* sk = sq + Dk;
  T* sv = sk + Dk;
  T* sg = sv + Dv;
  T* svb = sg + Dv;
  T* su = svb + Dv;
  T* sc = su + Dv;
  T* sdb = sc + Dv;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int64_t s = blockIdx.x; s < S; s += gridDim.x) {
    __syncthreads();  // the previous sequence is done with W and G
    for (int64_t e = threadIdx.x; e < WN; e += blockDim.x) {
      W[e] = w_last[s * WN + e];
      G[e] = T(0);
    }
    for (int64_t t = L - 1; t >= 0; --t) {
      const int64_t row = t * S + s;
      __syncthreads();  // the previous step's phase 2 is done with the rows
      for (int64_t j = threadIdx.x; j < Dk; j += blockDim.x) {
        sq[j] = q[row * Dk + j];
        sk[j] = k[row * Dk + j];
      }
      for (int64_t i = threadIdx.x; i < Dv; i += blockDim.x) {
        sv[i] = v[row * Dv + i];
        sg[i] = g[row * Dv + i];
        if (beta) svb[i] = vbar[row * Dv + i];
      }
      __syncthreads();
      const T b = beta ? beta[row] : T(1);
      // Phase 1: G += ĝ qᵀ and du = G k, one warp per row.
      T dbeta = 0;
      for (int64_t i = warp; i < Dv; i += kWarps) {
        T* gi_row = G + i * Dk;
        const T gi = sg[i];
        T acc = 0;
        for (int64_t j = lane; j < Dk; j += kWarp) {
          const T gn = gi_row[j] + gi * sq[j];
          gi_row[j] = gn;
          acc += gn * sk[j];
        }
        const T du = warp_reduce(acc, SumOp<T>{});
        if (lane == 0) {
          if (beta) {
            const T diff = sv[i] - svb[i];
            su[i] = b * diff;  // the forward's expression: the same bits
            sc[i] = -b * du;
            gv[row * Dv + i] = b * du;
            dbeta += diff * du;
          } else {
            su[i] = sv[i];
            sc[i] = T(0);
            gv[row * Dv + i] = du;
          }
        }
      }
      if (lane == 0) sdb[warp] = dbeta;
      __syncthreads();
      // Phase 2: one thread per column j walks the rows in order.
      for (int64_t j = threadIdx.x; j < Dk; j += blockDim.x) {
        const T kj = sk[j];
        T dq = 0, dk = 0;
        for (int64_t i = 0; i < Dv; ++i) {
          const T w = W[i * Dk + j];
          dq += sg[i] * w;
          dk += su[i] * G[i * Dk + j];  // the write W += u kᵀ
          const T wn = w - su[i] * kj;
          W[i * Dk + j] = wn;
          if (beta) {
            dk += sc[i] * wn;  // the read vbar = W_{t-1} k
            G[i * Dk + j] += sc[i] * kj;
          }
        }
        gq[row * Dk + j] = dq;
        gk[row * Dk + j] = dk;
      }
      if (beta && threadIdx.x == 0) {
        T total = 0;
        for (int w = 0; w < kWarps; ++w) total += sdb[w];
        gbeta[row] = total;
      }
    }
  }
}

template <class K>
void reserve(K* kernel, size_t bytes, const char* op, const Dims& d, const char* dtype, const char* holds) {
  reserve_shared_memory(reinterpret_cast<const void*>(kernel), bytes, op,
                        detail::concat("the fast weight W [Dv, Dk] = [", d.Dv, ", ", d.Dk, "] in ", dtype, " (", holds,
                                       " per block)"));
}

}  // namespace

void CudaBackend::delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta,
                             const Tensor& initial_state, const Tensor& out, const Tensor& final_state,
                             const Tensor& vbar) {
  const char* op = "delta_rule";
  dispatch_float(q.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Dims d = dims_of(q, v);
    if (d.S == 0 || d.Dv == 0) return;  // nothing to write (final_state, vbar, out are empty)
    if (d.L == 0 && !final_state.defined()) return;
    const Tensor qc = dense(q), kc = dense(k), vc = dense(v), bc = dense(beta), w0 = dense(initial_state);
    const size_t bytes = sizeof(T) * static_cast<size_t>(d.Dv * d.Dk + 2 * d.Dk + d.Dv);
    reserve(&delta_rule_forward_kernel<T>, bytes, op, d, dtype_name(q.dtype()), "W");
    delta_rule_forward_kernel<T><<<row_blocks(d.S), kThreads, bytes, stream()>>>(
        qc.data<T>(), kc.data<T>(), vc.data<T>(), data_or_null<const T>(bc), data_or_null<const T>(w0), out.data<T>(),
        data_or_null<T>(final_state), data_or_null<T>(vbar), d);
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

void CudaBackend::delta_rule_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                                      const Tensor& beta, const Tensor& vbar, const Tensor& final_state,
                                      const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v,
                                      const Tensor& grad_beta) {
  const char* op = "delta_rule_backward";
  dispatch_float(q.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Dims d = dims_of(q, v);
    if (d.S == 0 || d.L == 0) return;  // every gradient is empty
    if (d.Dv == 0) {  // W is empty: nothing flows to q and k, beta's gradient is an empty sum
      fill(grad_q, 0.0);
      fill(grad_k, 0.0);
      if (grad_beta.defined()) fill(grad_beta, 0.0);
      return;
    }
    const Tensor gc = dense(grad_out), qc = dense(q), kc = dense(k), vc = dense(v), bc = dense(beta),
                 vb = dense(vbar), wl = dense(final_state);
    const size_t bytes = sizeof(T) * static_cast<size_t>(2 * d.Dv * d.Dk + 2 * d.Dk + 5 * d.Dv + kWarps);
    reserve(&delta_rule_backward_kernel<T>, bytes, op, d, dtype_name(q.dtype()), "W and its gradient");
    delta_rule_backward_kernel<T><<<row_blocks(d.S), kThreads, bytes, stream()>>>(
        gc.data<T>(), qc.data<T>(), kc.data<T>(), vc.data<T>(), data_or_null<const T>(bc), data_or_null<const T>(vb),
        wl.data<T>(), grad_q.data<T>(), grad_k.data<T>(), grad_v.data<T>(), data_or_null<T>(grad_beta), d);
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

}  // namespace loom::cuda
