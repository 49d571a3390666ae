// delta_rule.cu: CUDA kernels of the fast-weight recurrence (delta and sum rule);
// the math, layouts and derivation are in engine/kernels/delta_rule.h.
//
// One thread block per sequence s = b·H + h: the block keeps its fast weight
// W [Dv, Dk] in shared memory and walks time inside the kernel, reading q, k,
// v, beta one step at a time.
//
// Forward, per step: warp w owns rows i ≡ w (mod warps) of W, so each row's
// read, write and read-out is one warp's work with no block synchronisation
// inside the step.
//
// Backward, in reverse time from the saved W_L, with G = dL/dW (from 0):
//   phase 1 (warp per row i):   G[i] += ĝ_i q;  du_i = G[i]·k; the row's backward
//   phase 2 (thread per column j, over all rows in order): dq_j, and the entries'
//                               backward (dk_j, W back to W_{t-1}, G to dL/dW_{t-1})
// Every output is written by one thread (dbeta: per-warp partials added in warp
// order), so the results have the same bits on every run.
//
// Shared memory: W (forward), W and G (backward), plus a few rows. For Dv = 64,
// Dk = 128 in float32 that is 32 KiB and 64 KiB; past 48 KiB the kernels opt in to
// more (up to 227 KiB per block on H100), and sizes beyond the GPU's limit are
// refused with an error naming them.
#include "cuda/block.cuh"
#include "cuda/cuda_backend.h"
#include "engine/kernels/delta_rule.h"

namespace loom::cuda {

namespace {

namespace step = kernels::delta_step;

struct Dims {
  int64_t L = 0, S = 0, Dk = 0, Dv = 0;  // S = B·H sequences
};

Dims dims_of(const Tensor& q, const Tensor& v) { return {q.size(0), q.size(1) * q.size(2), q.size(3), v.size(3)}; }

constexpr int kThreads = kBlockThreads;
constexpr int kWarps = kThreads / kWarp;

// Shared memory: kernels::DeltaRuleForwardShared.
template <class T>
__global__ void delta_rule_forward_kernel(const T* q, const T* k, const T* v, const T* beta, const T* w0, T* y,
                                          T* w_last, T* vbar, Dims d) {
  const int64_t L = d.L, S = d.S, Dk = d.Dk, Dv = d.Dv, WN = Dv * Dk;
  const kernels::DeltaRuleForwardShared lay(Dk, Dv);
  T* const base = dynamic_shared<T>();
  T* W = lay.W.in(base);
  T* sq = lay.q.in(base);
  T* sk = lay.k.in(base);
  T* sv = lay.v.in(base);
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
          u = step::write_strength(b, sv[i], vb);
        }
        T acc = 0;
        for (int64_t j = lane; j < Dk; j += kWarp) {
          const T wn = step::write(wi[j], u, sk[j]);
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

// Shared memory: kernels::DeltaRuleBackwardShared.
template <class T>
__global__ void delta_rule_backward_kernel(const T* g, const T* q, const T* k, const T* v, const T* beta,
                                           const T* vbar, const T* w_last, T* gq, T* gk, T* gv, T* gbeta, Dims d) {
  const int64_t L = d.L, S = d.S, Dk = d.Dk, Dv = d.Dv, WN = Dv * Dk;
  const kernels::DeltaRuleBackwardShared lay(Dk, Dv, kWarps);
  T* const base = dynamic_shared<T>();
  T* W = lay.W.in(base);
  T* G = lay.G.in(base);
  T* sq = lay.q.in(base);
  T* sk = lay.k.in(base);
  T* sv = lay.v.in(base);
  T* sg = lay.g_out.in(base);
  T* svb = lay.vbar.in(base);
  T* su = lay.u.in(base);
  T* sc = lay.dvbar.in(base);
  T* sdb = lay.dbeta.in(base);
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
            const step::RowGrads<T> rg = step::row_backward(b, sv[i], svb[i], du);
            su[i] = rg.u;
            sc[i] = rg.dvbar;
            gv[row * Dv + i] = rg.dv;
            dbeta += rg.dbeta;
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
          T w = W[i * Dk + j], gw = G[i * Dk + j];
          dq += sg[i] * w;
          if (beta) {
            step::unwrite(su[i], sc[i], kj, w, gw, dk);
            G[i * Dk + j] = gw;
          } else {
            step::unwrite_sum(su[i], kj, w, gw, dk);
          }
          W[i * Dk + j] = w;
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

void CudaBackend::delta_rule(const DeltaRuleArgs& a) {
  const Tensor &q = a.q, &k = a.k, &v = a.v, &beta = a.beta, &initial_state = a.initial_state, &out = a.out,
               &final_state = a.final_state, &vbar = a.vbar;
  const char* op = "delta_rule";
  dispatch_float(q.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Dims d = dims_of(q, v);
    if (d.S == 0 || d.Dv == 0) return;  // nothing to write (final_state, vbar, out are empty)
    if (d.L == 0 && !final_state.defined()) return;
    const Tensor qc = dense(q), kc = dense(k), vc = dense(v), bc = dense(beta), w0 = dense(initial_state);
    const size_t bytes = sizeof(T) * static_cast<size_t>(kernels::DeltaRuleForwardShared(d.Dk, d.Dv).total);
    reserve(&delta_rule_forward_kernel<T>, bytes, op, d, dtype_name(q.dtype()), "W");
    delta_rule_forward_kernel<T><<<row_blocks(d.S), kThreads, bytes, stream()>>>(
        qc.data<T>(), kc.data<T>(), vc.data<T>(), data_or_null<const T>(bc), data_or_null<const T>(w0), out.data<T>(),
        data_or_null<T>(final_state), data_or_null<T>(vbar), d);
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

void CudaBackend::delta_rule_backward(const DeltaRuleBackwardArgs& a) {
  const Tensor &grad_out = a.grad_out, &q = a.q, &k = a.k, &v = a.v, &beta = a.beta, &vbar = a.vbar,
               &final_state = a.final_state, &grad_q = a.grad_q, &grad_k = a.grad_k, &grad_v = a.grad_v,
               &grad_beta = a.grad_beta;
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
    const size_t bytes = sizeof(T) * static_cast<size_t>(kernels::DeltaRuleBackwardShared(d.Dk, d.Dv, kWarps).total);
    reserve(&delta_rule_backward_kernel<T>, bytes, op, d, dtype_name(q.dtype()), "W and its gradient");
    delta_rule_backward_kernel<T><<<row_blocks(d.S), kThreads, bytes, stream()>>>(
        gc.data<T>(), qc.data<T>(), kc.data<T>(), vc.data<T>(), data_or_null<const T>(bc), data_or_null<const T>(vb),
        wl.data<T>(), grad_q.data<T>(), grad_k.data<T>(), grad_v.data<T>(), data_or_null<T>(grad_beta), d);
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

}  // namespace loom::cuda
