// delta_lstm.cu: CUDA kernels of the Delta LSTM's recurrence (engine/ops.h).
//
// The math, layouts and derivation are in engine/kernels/delta_lstm.h. One
// thread block per sequence s = b·H + h: the block keeps the three fast weights
// R_g [D, D] in shared memory, with h_{t-1}, c_{t-1} and a few rows, and walks
// time inside the kernel.
//
// Forward, per step:
//   warp 0:             s = softmax(h_{t-1})
//   warp per row (g, i): vbar = R_g[i]·rk_g;  δ = gamma_g (rv_g[i] - vbar);  R_g[i] += δ rk_g;
//                        a_g[i] = z_g[i] + R_g[i]·s
//   thread per i:        the cell: c_t[i], h_t[i]
// Backward, in reverse time from the saved R_L, with G_g = dL/dR_g (from 0):
//   warp 0:             s = softmax(h_{t-1}) (h_{t-1} saved: the output)
//   warp per row:       a_g[i] = z_g[i] + R_g,t[i]·s
//   thread per i:       the cell's backward: da_g[i] (= dz), dc_{t-1}
//   warp per row:       G[i] += da_g[i] s;  dδ = G[i]·rk_g;  drv = gamma dδ;  c_i = -gamma dδ
//   thread per (g, j):  over the rows i in order: ds_g[j] += da_g[i] R[i, j];
//                       drk_g[j] += δ_i G[i, j];  R[i, j] -= δ_i rk_g[j];  drk_g[j] += c_i R[i, j];
//                       G[i, j] += c_i rk_g[j]
//   warp 0:             dh_{t-1} = s ⊙ (ds - s·ds), ds = Σ_g ds_g;  thread 0: dgamma_g in row order
// Every output is written by one thread, with sums in a fixed order, so the results
// have the same bits on every run.
//
// Shared memory: R (forward), R and G (backward), plus 15 and 34 rows of D
// (the layouts of engine/kernels/delta_lstm.h, which the launchers reserve). At
// D = 64 that is 52 KiB and 105 KiB in float32, 105 KiB and 209 KiB in float64;
// past 48 KiB the kernels opt in to more (up to 227 KiB per block on H100), and
// sizes beyond the GPU's limit are refused with an error naming the op and D.
#include "cuda/block.cuh"
#include "cuda/cuda_backend.h"
#include "engine/kernels/delta_lstm.h"

namespace loom::cuda {

namespace {

namespace step = kernels::delta_step;
namespace delta_lstm_cell = kernels::delta_lstm_cell;

constexpr int kGates = kernels::kDeltaLstmGates;
constexpr int kThreads = kBlockThreads;
constexpr int kWarps = kThreads / kWarp;

using Dims = kernels::DeltaLstmDims;
template <class T>
using Operands = kernels::DeltaLstmInputs<T>;

// out = softmax(x) over n elements, max-subtracted and scaled by 1/Σ as on the CPU,
// computed by warp 0 (the caller
// synchronises before and after).
template <class T>
__device__ void warp0_softmax(const T* x, T* out, int64_t n) {
  if (threadIdx.x >= kWarp || n == 0) return;
  const int lane = threadIdx.x;
  T m = x[0];
  for (int64_t j = lane; j < n; j += kWarp) m = MaxOp<T>{}(m, x[j]);
  m = warp_reduce(m, MaxOp<T>{});
  T total = 0;
  for (int64_t j = lane; j < n; j += kWarp) {
    const T e = exp(x[j] - m);
    out[j] = e;
    total += e;
  }
  const T inv = T(1) / warp_reduce(total, SumOp<T>{});
  for (int64_t j = lane; j < n; j += kWarp) out[j] *= inv;
}

// Loads the [3, D] rows of step `row` (= t·S + s) of x into shared memory.
template <class T>
__device__ void load_gate_rows(const T* x, T* dst, int64_t row, int64_t D) {
  for (int64_t e = threadIdx.x; e < kGates * D; e += blockDim.x) dst[e] = x[row * kGates * D + e];
}

// Shared memory: kernels::DeltaLstmForwardShared (engine/kernels/delta_lstm.h).
template <class T>
__global__ void delta_lstm_forward_kernel(Operands<T> in, kernels::DeltaLstmOutputs<T> outs) {
  T *out = outs.h, *cell = outs.cell, *vbar = outs.vbar, *R_last = outs.R_last, *h_last = outs.h_last,
    *c_last = outs.c_last;
  const int64_t L = in.d.L, S = in.d.S, D = in.d.D, RN = kGates * D * D, GD = kGates * D;
  const kernels::DeltaLstmForwardShared lay(D);
  T* const base = dynamic_shared<T>();
  T* R = lay.R.in(base);
  T* sh = lay.h.in(base);
  T* sc = lay.c.in(base);
  T* ss = lay.s.in(base);
  T* sz = lay.z.in(base);
  T* srk = lay.rk.in(base);
  T* srv = lay.rv.in(base);
  T* sa = lay.a.in(base);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int64_t s = blockIdx.x; s < S; s += gridDim.x) {
    __syncthreads();  // the previous sequence has written its states out
    for (int64_t e = threadIdx.x; e < RN; e += blockDim.x) R[e] = in.R0 ? in.R0[s * RN + e] : T(0);
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      sh[j] = in.h0 ? in.h0[s * D + j] : T(0);
      sc[j] = in.c0 ? in.c0[s * D + j] : T(0);
    }
    for (int64_t t = 0; t < L; ++t) {
      const int64_t row = t * S + s;
      __syncthreads();  // h_{t-1} is written, and the previous step is done with the rows
      warp0_softmax(sh, ss, D);
      load_gate_rows(in.z, sz, row, D);
      load_gate_rows(in.rk, srk, row, D);
      load_gate_rows(in.rv, srv, row, D);
      __syncthreads();
      for (int64_t r = warp; r < GD; r += kWarps) {  // row r = g·D + i of R; the same trip count on every lane
        const int64_t g = r / D;
        T* Ri = R + r * D;
        const T* rk = srk + g * D;
        T acc = 0;
        for (int64_t j = lane; j < D; j += kWarp) acc += Ri[j] * rk[j];
        const T vb = warp_reduce(acc, SumOp<T>{});
        if (vbar && lane == 0) vbar[row * GD + r] = vb;
        const T delta = step::write_strength(in.gamma[row * kGates + g], srv[r], vb);
        acc = 0;
        for (int64_t j = lane; j < D; j += kWarp) {
          const T rn = step::write(Ri[j], delta, rk[j]);
          Ri[j] = rn;
          acc += rn * ss[j];
        }
        acc = warp_reduce(acc, SumOp<T>{});
        if (lane == 0) sa[r] = sz[r] + acc;
      }
      __syncthreads();
      for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
        T c, h;
        delta_lstm_cell::forward(sa[i], sa[D + i], sa[2 * D + i], sc[i], c, h);
        sc[i] = c;
        sh[i] = h;
        out[row * D + i] = h;
        if (cell) cell[row * D + i] = c;
      }
    }
    __syncthreads();
    if (R_last)
      for (int64_t e = threadIdx.x; e < RN; e += blockDim.x) R_last[s * RN + e] = R[e];
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      if (h_last) h_last[s * D + j] = sh[j];
      if (c_last) c_last[s * D + j] = sc[j];
    }
  }
}

// Shared memory: kernels::DeltaLstmBackwardShared (engine/kernels/delta_lstm.h).
template <class T>
__global__ void delta_lstm_backward_kernel(Operands<T> in, kernels::DeltaLstmSaved<T> sv, kernels::DeltaLstmGrads<T> grad) {
  const int64_t L = in.d.L, S = in.d.S, D = in.d.D, RN = kGates * D * D, GD = kGates * D;
  const kernels::DeltaLstmBackwardShared lay(D);
  T* const base = dynamic_shared<T>();
  T* R = lay.R.in(base);
  T* G = lay.G.in(base);
  T* shp = lay.h_prev.in(base);
  T* scp = lay.c_prev.in(base);
  T* sct = lay.c.in(base);
  T* sg = lay.g_out.in(base);
  T* ss = lay.s.in(base);
  T* sdh = lay.dh_next.in(base);
  T* sdc = lay.dc_next.in(base);
  T* sz = lay.z.in(base);
  T* srk = lay.rk.in(base);
  T* srv = lay.rv.in(base);
  T* svb = lay.vbar.in(base);
  T* sa = lay.a.in(base);
  T* sdelta = lay.delta.in(base);
  T* scc = lay.dvbar.in(base);
  T* sdg = lay.dgamma.in(base);
  T* sds = lay.ds.in(base);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int64_t s = blockIdx.x; s < S; s += gridDim.x) {
    __syncthreads();  // the previous sequence is done with R and G
    for (int64_t e = threadIdx.x; e < RN; e += blockDim.x) {
      R[e] = sv.R_last[s * RN + e];
      G[e] = T(0);
    }
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      sdh[j] = T(0);
      sdc[j] = T(0);
    }
    for (int64_t t = L - 1; t >= 0; --t) {
      const int64_t row = t * S + s, prev = (t - 1) * S + s;
      __syncthreads();  // the previous step is done with the rows
      for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        shp[j] = t > 0 ? sv.h[prev * D + j] : in.h0 ? in.h0[s * D + j] : T(0);
        scp[j] = t > 0 ? sv.cell[prev * D + j] : in.c0 ? in.c0[s * D + j] : T(0);
        sct[j] = sv.cell[row * D + j];
        sg[j] = sv.g_out[row * D + j];
      }
      load_gate_rows(in.z, sz, row, D);
      load_gate_rows(in.rk, srk, row, D);
      load_gate_rows(in.rv, srv, row, D);
      load_gate_rows(sv.vbar, svb, row, D);
      __syncthreads();
      warp0_softmax(shp, ss, D);
      __syncthreads();
      // The gates' pre-activations from R_g,t.
      for (int64_t r = warp; r < GD; r += kWarps) {
        const T* Ri = R + r * D;
        T acc = 0;
        for (int64_t j = lane; j < D; j += kWarp) acc += Ri[j] * ss[j];
        acc = warp_reduce(acc, SumOp<T>{});
        if (lane == 0) sa[r] = sz[r] + acc;
      }
      __syncthreads();
      // The cell's backward; sa now holds da_g = dz_g.
      for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
        const auto d = delta_lstm_cell::backward(sa[i], sa[D + i], sa[2 * D + i], scp[i], sct[i], sg[i] + sdh[i], sdc[i]);
        sa[i] = d.da0;
        sa[D + i] = d.da1;
        sa[2 * D + i] = d.da2;
        sdc[i] = d.dc_prev;
        grad.z[row * GD + i] = d.da0;
        grad.z[row * GD + D + i] = d.da1;
        grad.z[row * GD + 2 * D + i] = d.da2;
      }
      __syncthreads();
      // Phase 1: G += da sᵀ and dδ = G rk, one warp per row.
      for (int64_t r = warp; r < GD; r += kWarps) {
        const int64_t g = r / D;
        T* Gi = G + r * D;
        const T* rk = srk + g * D;
        const T da = sa[r];
        T acc = 0;
        for (int64_t j = lane; j < D; j += kWarp) {
          const T gn = Gi[j] + da * ss[j];
          Gi[j] = gn;
          acc += gn * rk[j];
        }
        const T ddelta = warp_reduce(acc, SumOp<T>{});
        if (lane == 0) {
          const step::RowGrads<T> rg = step::row_backward(in.gamma[row * kGates + g], srv[r], svb[r], ddelta);
          sdelta[r] = rg.u;
          scc[r] = rg.dvbar;
          sdg[r] = rg.dbeta;
          grad.rv[row * GD + r] = rg.dv;
        }
      }
      __syncthreads();
      // Phase 2: one thread per (gate, column) walks the gate's rows in order.
      for (int64_t e = threadIdx.x; e < GD; e += blockDim.x) {
        const int64_t g = e / D, j = e % D;
        const T kj = srk[e];
        T ds = 0, dk = 0;
        for (int64_t i = 0; i < D; ++i) {
          const int64_t r = g * D + i, at = r * D + j;
          T w = R[at], gw = G[at];
          ds += sa[r] * w;  // the read-out a = z + R_t s
          step::unwrite(sdelta[r], scc[r], kj, w, gw, dk);
          R[at] = w;
          G[at] = gw;
        }
        sds[e] = ds;
        grad.rk[row * GD + e] = dk;
      }
      __syncthreads();
      // Through s = softmax(h_{t-1}): warp 0; the gammas' gradients: thread 0.
      if (warp == 0) {
        T dot = 0;
        for (int64_t j = lane; j < D; j += kWarp) dot += ss[j] * (sds[j] + sds[D + j] + sds[2 * D + j]);
        dot = warp_reduce(dot, SumOp<T>{});
        for (int64_t j = lane; j < D; j += kWarp) sdh[j] = ss[j] * (sds[j] + sds[D + j] + sds[2 * D + j] - dot);
        if (lane == 0)
          for (int g = 0; g < kGates; ++g) {
            T total = 0;
            for (int64_t i = 0; i < D; ++i) total += sdg[g * D + i];
            grad.gamma[row * kGates + g] = total;
          }
      }
    }
  }
}

template <class K>
void reserve(K* kernel, size_t bytes, const char* op, const Dims& d, const char* dtype, const char* holds) {
  reserve_shared_memory(reinterpret_cast<const void*>(kernel), bytes, op,
                        detail::concat("the three fast weights R_g [D, D] with D = ", d.D, " in ", dtype, " (",
                                       holds, " per block)"));
}

}  // namespace

void CudaBackend::delta_lstm(const DeltaLstmArgs& a) {
  const char* op = "delta_lstm";
  dispatch_float(a.z.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Dims d = kernels::delta_lstm_dims(a.z);
    if (d.S == 0 || d.D == 0) return;  // every output is empty
    const size_t bytes = sizeof(T) * static_cast<size_t>(kernels::DeltaLstmForwardShared(d.D).total);
    reserve(&delta_lstm_forward_kernel<T>, bytes, op, d, dtype_name(a.z.dtype()), "R");
    delta_lstm_forward_kernel<T><<<row_blocks(d.S), kThreads, bytes, stream()>>>(kernels::inputs_of<T>(a),
                                                                                kernels::outputs_of<T>(a));
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

void CudaBackend::delta_lstm_backward(const DeltaLstmBackwardArgs& a) {
  const char* op = "delta_lstm_backward";
  dispatch_float(a.z.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Dims d = kernels::delta_lstm_dims(a.z);
    if (d.S == 0 || d.L == 0) return;  // every gradient is empty
    if (d.D == 0) {  // no state: gamma's gradient is an empty sum
      fill(a.grad_gamma, 0.0);
      return;
    }
    const size_t bytes = sizeof(T) * static_cast<size_t>(kernels::DeltaLstmBackwardShared(d.D).total);
    reserve(&delta_lstm_backward_kernel<T>, bytes, op, d, dtype_name(a.z.dtype()), "R and its gradient");
    delta_lstm_backward_kernel<T><<<row_blocks(d.S), kThreads, bytes, stream()>>>(
        kernels::inputs_of<T>(a), kernels::saved_of<T>(a), kernels::grads_of<T>(a));
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

}  // namespace loom::cuda
