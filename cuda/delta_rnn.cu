// delta_rnn.cu: CUDA kernels of the Delta RNN's recurrence; the math, layouts
// and derivation are in engine/kernels/delta_rnn.h.
//
// One thread block per sequence s = b·H + h: the block keeps its recurrent fast
// weight R [D, D] in shared memory and walks time inside the kernel, reading z,
// rk, rv, gamma one step at a time.
//
// Forward, per step: the block computes s = softmax(y_{t-1}) (block
// reductions), then warp w owns rows i ≡ w (mod warps) of R: each row's
// delta-rule step and read-out is one warp's work, with no block
// synchronisation inside the step.
//
// Backward, in reverse time from the saved R_L, with G = dL/dR (from 0) and
// gy = dL/dy_t carried from step t+1; ĝ = grad_out_t + gy:
//   phase 1 (warp per row i):   dz_i = ĝ_i;  G[i] += ĝ_i s;  du_i = G[i]·rk; the row's backward
//   phase 2 (thread per column j, over all rows in order): ds_j, and the entries'
//                               backward (drk_j, R back to R_{t-1}, G to dL/dR_{t-1})
//   phase 3 (thread per entry): gy = s ⊙ (ds - s·ds)  (dL/dy_{t-1}, dropped at t = 1)
// Every output is written by one thread (dgamma: per-warp partials added in
// warp order), so the results have the same bits on every run.
//
// Shared memory: R (forward), R and G (backward), plus a few rows. For D = 64 in
// float32 that is 16 KiB and 32 KiB (float64: 32 and 64 KiB, past 48 KiB the
// kernels opt in to more); D up to about 168 (float32) fits the backward on an
// H100, and larger D is refused with an error naming the op and D.
#include "cuda/block.cuh"
#include "cuda/cuda_backend.h"
#include "engine/kernels/delta_rnn.h"

namespace loom::cuda {

namespace {

namespace step = kernels::delta_step;

struct Dims {
  int64_t L = 0, S = 0, D = 0;  // S = B·H sequences
};

Dims dims_of(const Tensor& z) { return {z.size(0), z.size(1) * z.size(2), z.size(3)}; }

constexpr int kThreads = kBlockThreads;
constexpr int kWarps = kThreads / kWarp;

// soft = softmax(y) over D entries (y == nullptr: zeros, so soft is uniform).
// Every thread of the block calls it; soft is complete when it returns.
template <class T>
__device__ void block_softmax(const T* y, T* soft, int64_t D) {
  if (!y) {
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) soft[j] = T(1) / static_cast<T>(D);
    __syncthreads();
    return;
  }
  T top = -INFINITY;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) top = y[j] > top ? y[j] : top;
  top = block_max(top);
  T total = 0;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    const T e = exp(y[j] - top);
    soft[j] = e;
    total += e;
  }
  total = block_sum(total);
  const T inv = T(1) / total;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) soft[j] *= inv;
  __syncthreads();
}

// Shared memory: kernels::DeltaRnnForwardShared.
template <class T>
__global__ void delta_rnn_forward_kernel(const T* z, const T* rk, const T* rv, const T* gamma, const T* r0,
                                         const T* y0, T* y, T* r_last, T* vbar, Dims d) {
  const int64_t L = d.L, S = d.S, D = d.D, RN = D * D;
  const kernels::DeltaRnnForwardShared lay(D);
  T* const base = dynamic_shared<T>();
  T* R = lay.R.in(base);
  T* sk = lay.rk.in(base);
  T* sv = lay.rv.in(base);
  T* soft = lay.soft.in(base);
  T* sy = lay.y.in(base);  // y_{t-1}, then y_t
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int64_t s = blockIdx.x; s < S; s += gridDim.x) {
    __syncthreads();  // the previous sequence has written R out
    for (int64_t e = threadIdx.x; e < RN; e += blockDim.x) R[e] = r0 ? r0[s * RN + e] : T(0);
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) sy[j] = y0 ? y0[s * D + j] : T(0);
    for (int64_t t = 0; t < L; ++t) {
      const int64_t row = t * S + s;
      __syncthreads();  // the previous step is done with sk, sv, soft and has written sy
      for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        sk[j] = rk[row * D + j];
        sv[j] = rv[row * D + j];
      }
      block_softmax<T>(sy, soft, D);  // ends with a barrier: sk, sv, soft are ready
      const T g = gamma[row];
      for (int64_t i = warp; i < D; i += kWarps) {  // the same trip count on every lane
        T* ri = R + i * D;
        T acc = 0;
        for (int64_t j = lane; j < D; j += kWarp) acc += ri[j] * sk[j];
        const T vb = warp_reduce(acc, SumOp<T>{});
        if (vbar && lane == 0) vbar[row * D + i] = vb;
        const T u = step::write_strength(g, sv[i], vb);
        acc = 0;
        for (int64_t j = lane; j < D; j += kWarp) {
          const T rn = step::write(ri[j], u, sk[j]);
          ri[j] = rn;
          acc += rn * soft[j];
        }
        acc = warp_reduce(acc, SumOp<T>{});
        if (lane == 0) {
          const T yi = z[row * D + i] + acc;
          y[row * D + i] = yi;
          sy[i] = yi;  // soft already holds softmax(y_{t-1}): sy is free to take y_t
        }
      }
    }
    __syncthreads();
    if (r_last)
      for (int64_t e = threadIdx.x; e < RN; e += blockDim.x) r_last[s * RN + e] = R[e];
  }
}

// Shared memory: kernels::DeltaRnnBackwardShared.
template <class T>
__global__ void delta_rnn_backward_kernel(const T* grad, const T* rk, const T* rv, const T* gamma, const T* y0,
                                          const T* y, const T* vbar, const T* r_last, T* gz, T* grk, T* grv,
                                          T* ggamma, Dims d) {
  const int64_t L = d.L, S = d.S, D = d.D, RN = D * D;
  const kernels::DeltaRnnBackwardShared lay(D, kWarps);
  T* const base = dynamic_shared<T>();
  T* R = lay.R.in(base);
  T* G = lay.G.in(base);
  T* sk = lay.rk.in(base);
  T* sv = lay.rv.in(base);
  T* svb = lay.vbar.in(base);
  T* sg = lay.g_out.in(base);  // ĝ = dL/dy_t; gy (dL/dy_{t-1}) is written into it at the end of the step
  T* soft = lay.soft.in(base);
  T* su = lay.u.in(base);
  T* sc = lay.dvbar.in(base);
  T* sds = lay.ds.in(base);
  T* sdg = lay.dgamma.in(base);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int64_t s = blockIdx.x; s < S; s += gridDim.x) {
    __syncthreads();  // the previous sequence is done with R, G and sg
    for (int64_t e = threadIdx.x; e < RN; e += blockDim.x) {
      R[e] = r_last[s * RN + e];
      G[e] = T(0);
    }
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) sg[j] = T(0);
    for (int64_t t = L - 1; t >= 0; --t) {
      const int64_t row = t * S + s;
      __syncthreads();  // the previous step's phase 3 is done with soft and sds and has written sg
      for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        sk[j] = rk[row * D + j];
        sv[j] = rv[row * D + j];
        svb[j] = vbar[row * D + j];
        const T gh = grad[row * D + j] + sg[j];
        sg[j] = gh;
        gz[row * D + j] = gh;
      }
      const T* prev = t > 0 ? y + (row - S) * D : (y0 ? y0 + s * D : nullptr);
      block_softmax<T>(prev, soft, D);  // ends with a barrier: the rows are ready
      const T g = gamma[row];
      // Phase 1: G += ĝ sᵀ and du = G rk, one warp per row.
      T dgamma = 0;
      for (int64_t i = warp; i < D; i += kWarps) {
        T* gi_row = G + i * D;
        const T gi = sg[i];
        T acc = 0;
        for (int64_t j = lane; j < D; j += kWarp) {
          const T gn = gi_row[j] + gi * soft[j];
          gi_row[j] = gn;
          acc += gn * sk[j];
        }
        const T du = warp_reduce(acc, SumOp<T>{});
        if (lane == 0) {
          const step::RowGrads<T> rg = step::row_backward(g, sv[i], svb[i], du);
          su[i] = rg.u;
          sc[i] = rg.dvbar;
          grv[row * D + i] = rg.dv;
          dgamma += rg.dbeta;
        }
      }
      if (lane == 0) sdg[warp] = dgamma;
      __syncthreads();
      // Phase 2: one thread per column j walks the rows in order.
      for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        const T kj = sk[j];
        T ds = 0, dk = 0;
        for (int64_t i = 0; i < D; ++i) {
          T r = R[i * D + j], gr = G[i * D + j];
          ds += sg[i] * r;
          step::unwrite(su[i], sc[i], kj, r, gr, dk);
          R[i * D + j] = r;
          G[i * D + j] = gr;
        }
        sds[j] = ds;
        grk[row * D + j] = dk;
      }
      if (threadIdx.x == 0) {
        T total = 0;
        for (int w = 0; w < kWarps; ++w) total += sdg[w];
        ggamma[row] = total;
      }
      __syncthreads();
      // Phase 3: dL/dy_{t-1} through s = softmax(y_{t-1}), into sg for the next step.
      T part = 0;
      for (int64_t j = threadIdx.x; j < D; j += blockDim.x) part += soft[j] * sds[j];
      const T sds_total = block_sum(part);  // a barrier: every thread is done reading sg
      for (int64_t j = threadIdx.x; j < D; j += blockDim.x) sg[j] = soft[j] * (sds[j] - sds_total);
    }
  }
}

template <class K>
void reserve(K* kernel, size_t bytes, const char* op, const Dims& d, const char* dtype, const char* holds) {
  reserve_shared_memory(reinterpret_cast<const void*>(kernel), bytes, op,
                        detail::concat("the recurrent fast weight R [D, D] with D = ", d.D, " in ", dtype, " (",
                                       holds, " per block)"));
}

}  // namespace

void CudaBackend::delta_rnn(const DeltaRnnArgs& a) {
  const Tensor &z = a.z, &rk = a.rk, &rv = a.rv, &gamma = a.gamma, &initial_R = a.initial_R, &initial_y = a.initial_y,
               &out = a.out, &final_R = a.final_R, &vbar = a.vbar;
  const char* op = "delta_rnn";
  dispatch_float(z.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Dims d = dims_of(z);
    if (d.S == 0 || d.D == 0) return;  // nothing to write (final_R, vbar, out are empty)
    if (d.L == 0 && !final_R.defined()) return;
    const Tensor zc = dense(z), kc = dense(rk), vc = dense(rv), gc = dense(gamma), r0 = dense(initial_R),
                 y0 = dense(initial_y);
    const size_t bytes = sizeof(T) * static_cast<size_t>(kernels::DeltaRnnForwardShared(d.D).total);
    reserve(&delta_rnn_forward_kernel<T>, bytes, op, d, dtype_name(z.dtype()), "R");
    delta_rnn_forward_kernel<T><<<row_blocks(d.S), kThreads, bytes, stream()>>>(
        zc.data<T>(), kc.data<T>(), vc.data<T>(), gc.data<T>(), data_or_null<const T>(r0), data_or_null<const T>(y0),
        out.data<T>(), data_or_null<T>(final_R), data_or_null<T>(vbar), d);
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

void CudaBackend::delta_rnn_backward(const DeltaRnnBackwardArgs& a) {
  const Tensor &grad_out = a.grad_out, &rk = a.rk, &rv = a.rv, &gamma = a.gamma, &initial_y = a.initial_y,
               &out = a.out, &vbar = a.vbar, &final_R = a.final_R, &grad_z = a.grad_z, &grad_rk = a.grad_rk,
               &grad_rv = a.grad_rv, &grad_gamma = a.grad_gamma;
  const char* op = "delta_rnn_backward";
  dispatch_float(rk.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Dims d = dims_of(rk);
    if (d.S == 0 || d.L == 0) return;  // every gradient is empty
    if (d.D == 0) {  // R is empty: gamma's gradient is an empty sum
      fill(grad_gamma, 0.0);
      return;
    }
    const Tensor gc = dense(grad_out), kc = dense(rk), vc = dense(rv), bc = dense(gamma), y0 = dense(initial_y),
                 yc = dense(out), vb = dense(vbar), rl = dense(final_R);
    const size_t bytes = sizeof(T) * static_cast<size_t>(kernels::DeltaRnnBackwardShared(d.D, kWarps).total);
    reserve(&delta_rnn_backward_kernel<T>, bytes, op, d, dtype_name(rk.dtype()), "R and its gradient");
    delta_rnn_backward_kernel<T><<<row_blocks(d.S), kThreads, bytes, stream()>>>(
        gc.data<T>(), kc.data<T>(), vc.data<T>(), bc.data<T>(), data_or_null<const T>(y0), yc.data<T>(),
        vb.data<T>(), rl.data<T>(), grad_z.data<T>(), grad_rk.data<T>(), grad_rv.data<T>(), grad_gamma.data<T>(), d);
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

}  // namespace loom::cuda
