// recurrent_delta_net.cu: CUDA kernels of the Recurrent Delta Net; the math,
// layouts and derivation are in engine/kernels/recurrent_delta_net.h.
//
// One thread block per sequence s = b·H + h (a grid-stride loop over S) walks
// time inside the kernel with its fast weight W [D, D] in shared memory; the
// recurrent parameters Rq, Rk, Rv, rb of head h are read from global memory
// (the B blocks of a head share them through the cache). Element (t, s, i) of
// the outputs lies at (t·S + s)·D + i; qx, kx, vx, bx are read through their
// strides (SequenceRows).
//
// Forward, per step (each stage ends at a block barrier):
//   1. a = tanh(y_{t-1})                                    thread per entry
//   2. the slow net's 3D + 1 dot products with a            warp per row
//   3. q, k = softmax (warps 0 and 1), beta = sigmoid       warp per vector
//   4. vbar_i = W[i]·k, W[i] += beta (v_i - vbar_i) k, y_i = W[i]·q   warp per row
// Backward, in reverse time from the saved W_L, with G = dL/dW (from 0) and
// e = dL/dy_t from the later steps (from 0):
//   1. ĝ = grad_out_t + e, a = tanh(y_{t-1})
//   2. G[i] += ĝ_i q; du_i = G[i]·k; u_i, c_i = -beta du_i, dv_i   warp per row
//   3. dq_j, dk_j; W back to W_{t-1}; G += c kᵀ             thread per column j, rows in order
//   4. q·dq, k·dk (warps 0 and 1); dbeta from the per-warp partials in warp order
//   5. dqx, dkx (thread per entry), dbx
//   6. this sequence's dRq, dRk, dRv, drb += ... aᵀ (thread per entry) and
//      e_j = (Σ_i Rq[i, j] dqx_i + ... + rb_j dbx)(1 - a_j²)   thread per column
// The parameter gradients are summed per sequence in a global buffer [S, 3D² + D]
// (every entry owned by one thread), then a second kernel adds each head's B
// sequences in the order of b: every result has the same bits on every run.
//
// Shared memory (kernels::RecurrentDeltaNetForwardShared and ...BackwardShared):
// forward D² + 7D + 2 values (W and vectors), backward 2D² + 14D + 3 + one value
// per warp (W, G and vectors). For D = 64 in float32 that is 18 KiB
// and 36 KiB, in float64 36 KiB and 71 KiB (which opts in to more than 48 KiB);
// sizes past the GPU's limit are refused with an error naming the op and D.
#include "cuda/block.cuh"
#include "cuda/cuda_backend.h"
#include "engine/kernels/recurrent_delta_net.h"

namespace loom::cuda {

namespace {

namespace step = kernels::delta_step;

using Dims = kernels::RecurrentDeltaNetDims;
template <class T>
using Forward = kernels::RecurrentDeltaNetForward<T>;
template <class T>
using Backward = kernels::RecurrentDeltaNetBackward<T>;

constexpr int kThreads = kBlockThreads;
constexpr int kWarps = kThreads / kWarp;
static_assert(kWarps >= 3, "the softmaxes and the sigmoid of a step run on three warps");

// p = softmax(x) over n entries, computed by one warp (max subtracted first).
template <class T>
__device__ void warp_softmax(const T* x, T* p, int64_t n, int lane) {
  T m = x[0];
  for (int64_t j = lane; j < n; j += kWarp) m = x[j] > m ? x[j] : m;
  m = warp_reduce(m, MaxOp<T>{});
  T s = 0;
  for (int64_t j = lane; j < n; j += kWarp) {
    const T e = std::exp(x[j] - m);
    p[j] = e;
    s += e;
  }
  s = warp_reduce(s, SumOp<T>{});
  __syncwarp();
  const T inv = T(1) / s;
  for (int64_t j = lane; j < n; j += kWarp) p[j] *= inv;
}

// x·y over n entries, by one warp; every lane gets the result.
template <class T>
__device__ T warp_dot(const T* x, const T* y, int64_t n, int lane) {
  T acc = 0;
  for (int64_t j = lane; j < n; j += kWarp) acc += x[j] * y[j];
  return warp_reduce(acc, SumOp<T>{});
}

// Shared memory: kernels::RecurrentDeltaNetForwardShared.
template <class T>
__global__ void rdn_forward_kernel(Forward<T> f, Dims d) {
  const int64_t L = d.L, S = d.S, D = d.D, WN = D * D;
  const kernels::RecurrentDeltaNetForwardShared lay(D);
  T* const base = dynamic_shared<T>();
  T* W = lay.W.in(base);
  T* sa = lay.a.in(base);
  T* spq = lay.pre_q.in(base);
  T* spk = lay.pre_k.in(base);
  T* sq = lay.q.in(base);
  T* sk = lay.k.in(base);
  T* sv = lay.v.in(base);
  T* sy = lay.y.in(base);
  T* sb = lay.beta.in(base);  // [0]: beta_t; [1]: its pre-activation
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int64_t s = blockIdx.x; s < S; s += gridDim.x) {
    const int64_t h = s % d.H;
    const T* Rq = f.Rq + h * WN;
    const T* Rk = f.Rk + h * WN;
    const T* Rv = f.Rv + h * WN;
    const T* rb = f.rb + h * D;
    __syncthreads();  // the previous sequence has written W and y out
    for (int64_t e = threadIdx.x; e < WN; e += blockDim.x) W[e] = f.W0 ? f.W0[s * WN + e] : T(0);
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) sy[i] = f.y0 ? f.y0[s * D + i] : T(0);
    for (int64_t t = 0; t < L; ++t) {
      const int64_t row = t * S + s;
      __syncthreads();  // sy holds y_{t-1}; the previous step is done with every vector
      for (int64_t i = threadIdx.x; i < D; i += blockDim.x) sa[i] = std::tanh(sy[i]);
      __syncthreads();
      // The slow net: rows [0, D) pre-q, [D, 2D) pre-k, [2D, 3D) v, 3D the pre-activation of beta.
      for (int64_t r = warp; r <= 3 * D; r += kWarps) {
        const int64_t i = r % D;
        const T* w = r < D ? Rq + i * D : r < 2 * D ? Rk + i * D : r < 3 * D ? Rv + i * D : rb;
        const T dot = warp_dot(w, sa, D, lane);
        if (lane == 0) {
          // The inputs through their strides (windows of a projection): sequence s = b·H + h.
          if (r < D) spq[i] = f.qx.at(t, s / d.H, h)[i] + dot;
          else if (r < 2 * D) spk[i] = f.kx.at(t, s / d.H, h)[i] + dot;
          else if (r < 3 * D) sv[i] = f.vx.at(t, s / d.H, h)[i] + dot;
          else sb[1] = *f.bx.at(t, s / d.H, h) + dot;
        }
      }
      __syncthreads();
      if (warp == 0) warp_softmax(spq, sq, D, lane);
      if (warp == 1) warp_softmax(spk, sk, D, lane);
      if (threadIdx.x == 2 * kWarp) sb[0] = T(1) / (T(1) + std::exp(-sb[1]));
      __syncthreads();
      const T b = sb[0];
      if (f.q) {
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
          f.q[row * D + i] = sq[i];
          f.k[row * D + i] = sk[i];
          f.v[row * D + i] = sv[i];
        }
        if (threadIdx.x == 0) f.beta[row] = b;
      }
      // The delta rule on W and the read-out, one warp per row.
      for (int64_t i = warp; i < D; i += kWarps) {
        T* wi = W + i * D;
        const T vb = warp_dot(wi, sk, D, lane);
        const T u = step::write_strength(b, sv[i], vb);
        __syncwarp();
        T acc = 0;
        for (int64_t j = lane; j < D; j += kWarp) {
          const T wn = step::write(wi[j], u, sk[j]);
          wi[j] = wn;
          acc += wn * sq[j];
        }
        acc = warp_reduce(acc, SumOp<T>{});
        if (lane == 0) {
          if (f.vbar) f.vbar[row * D + i] = vb;
          f.y[row * D + i] = acc;
          sy[i] = acc;
        }
      }
    }
    __syncthreads();
    if (f.W_last)
      for (int64_t e = threadIdx.x; e < WN; e += blockDim.x) f.W_last[s * WN + e] = W[e];
    if (f.y_last)
      for (int64_t i = threadIdx.x; i < D; i += blockDim.x) f.y_last[s * D + i] = sy[i];
  }
}

// Shared memory: kernels::RecurrentDeltaNetBackwardShared.
template <class T>
__global__ void rdn_backward_kernel(Backward<T> f, Dims d) {
  const int64_t L = d.L, S = d.S, D = d.D, WN = D * D, P = 3 * WN + D;
  const kernels::RecurrentDeltaNetBackwardShared lay(D, kWarps);
  T* const base = dynamic_shared<T>();
  T* W = lay.W.in(base);
  T* G = lay.G.in(base);
  T* sa = lay.a.in(base);
  T* se = lay.e.in(base);
  T* sg = lay.g_out.in(base);
  T* sq = lay.q.in(base);
  T* sk = lay.k.in(base);
  T* sv = lay.v.in(base);
  T* svb = lay.vbar.in(base);
  T* su = lay.u.in(base);
  T* sc = lay.dvbar.in(base);
  T* sdq = lay.dq.in(base);
  T* sdk = lay.dk.in(base);
  T* sdqx = lay.dqx.in(base);
  T* sdkx = lay.dkx.in(base);
  T* sdv = lay.dv.in(base);
  T* sscalar = lay.scalars.in(base);  // [0] q·dq, [1] k·dk, [2] dbx
  T* sdb = lay.dbeta.in(base);        // [kWarps]
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  for (int64_t s = blockIdx.x; s < S; s += gridDim.x) {
    const int64_t h = s % d.H;
    const T* Rq = f.Rq + h * WN;
    const T* Rk = f.Rk + h * WN;
    const T* Rv = f.Rv + h * WN;
    const T* rb = f.rb + h * D;
    T* dRq = f.partials + s * P;
    T* dRk = dRq + WN;
    T* dRv = dRk + WN;
    T* drb = dRv + WN;
    __syncthreads();  // the previous sequence is done with W, G and the vectors
    for (int64_t e = threadIdx.x; e < WN; e += blockDim.x) {
      W[e] = f.W_last[s * WN + e];
      G[e] = T(0);
    }
    for (int64_t e = threadIdx.x; e < P; e += blockDim.x) dRq[e] = T(0);
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) se[i] = T(0);
    for (int64_t t = L - 1; t >= 0; --t) {
      const int64_t row = t * S + s;
      const T* y_prev = t > 0 ? f.y + (row - S) * D : (f.y0 ? f.y0 + s * D : nullptr);
      __syncthreads();  // the previous step has written e and is done with every vector
      for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
        sa[i] = y_prev ? std::tanh(y_prev[i]) : T(0);
        sg[i] = f.g[row * D + i] + se[i];
        sq[i] = f.q[row * D + i];
        sk[i] = f.k[row * D + i];
        sv[i] = f.v[row * D + i];
        svb[i] = f.vbar[row * D + i];
      }
      __syncthreads();
      const T b = f.beta[row];
      // G += ĝ qᵀ; du = G k; u, c, dv: one warp per row.
      T dbeta = 0;
      for (int64_t i = warp; i < D; i += kWarps) {
        T* gi_row = G + i * D;
        const T gi = sg[i];
        T acc = 0;
        for (int64_t j = lane; j < D; j += kWarp) {
          const T gn = gi_row[j] + gi * sq[j];
          gi_row[j] = gn;
          acc += gn * sk[j];
        }
        const T du = warp_reduce(acc, SumOp<T>{});
        if (lane == 0) {
          const step::RowGrads<T> rg = step::row_backward(b, sv[i], svb[i], du);
          su[i] = rg.u;
          sc[i] = rg.dvbar;
          sdv[i] = rg.dv;
          f.gvx[row * D + i] = rg.dv;
          dbeta += rg.dbeta;
        }
      }
      if (lane == 0) sdb[warp] = dbeta;
      __syncthreads();
      // dq, dk; W back to W_{t-1}; G to dL/dW_{t-1}: one thread per column, rows in order.
      for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        const T kj = sk[j];
        T dq = 0, dk = 0;
        for (int64_t i = 0; i < D; ++i) {
          T w = W[i * D + j], gw = G[i * D + j];
          dq += sg[i] * w;
          step::unwrite(su[i], sc[i], kj, w, gw, dk);
          W[i * D + j] = w;
          G[i * D + j] = gw;
        }
        sdq[j] = dq;
        sdk[j] = dk;
      }
      __syncthreads();
      if (warp == 0) {
        const T x = warp_dot(sq, sdq, D, lane);
        if (lane == 0) sscalar[0] = x;
      }
      if (warp == 1) {
        const T x = warp_dot(sk, sdk, D, lane);
        if (lane == 0) sscalar[1] = x;
      }
      if (threadIdx.x == 2 * kWarp) {
        T total = 0;
        for (int w = 0; w < kWarps; ++w) total += sdb[w];
        const T dbx = total * b * (T(1) - b);
        sscalar[2] = dbx;
        f.gbx[row] = dbx;
      }
      __syncthreads();
      for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
        const T dqx = sq[i] * (sdq[i] - sscalar[0]);
        const T dkx = sk[i] * (sdk[i] - sscalar[1]);
        sdqx[i] = dqx;
        sdkx[i] = dkx;
        f.gqx[row * D + i] = dqx;
        f.gkx[row * D + i] = dkx;
      }
      __syncthreads();
      const T dbx = sscalar[2];
      // This sequence's parameter gradients: entry (i, j) owned by one thread.
      for (int64_t e = threadIdx.x; e < WN; e += blockDim.x) {
        const int64_t i = e / D, j = e % D;
        dRq[e] += sdqx[i] * sa[j];
        dRk[e] += sdkx[i] * sa[j];
        dRv[e] += sdv[i] * sa[j];
      }
      // dL/dy_{t-1} through a = tanh(y_{t-1}): one thread per column, rows in order.
      for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
        drb[j] += dbx * sa[j];
        T da = rb[j] * dbx;
        for (int64_t i = 0; i < D; ++i) da += Rq[i * D + j] * sdqx[i] + Rk[i * D + j] * sdkx[i] + Rv[i * D + j] * sdv[i];
        se[j] = da * (T(1) - sa[j] * sa[j]);
      }
    }
  }
}

// The heads' parameter gradients from the per-sequence partials: thread per entry.
template <class T>
__global__ void rdn_reduce_heads_kernel(const T* partials, T* gRq, T* gRk, T* gRv, T* grb, int64_t B, Dims d) {
  const int64_t H = d.H, D = d.D, WN = D * D, P = 3 * WN + D, n = H * P;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n; idx += int64_t{gridDim.x} * blockDim.x) {
    kernels::reduce_head_entry(partials, gRq, gRk, gRv, grb, idx / P, idx % P, B, H, D);
  }
}

template <class K>
void reserve(K* kernel, size_t bytes, const char* op, const Dims& d, const char* dtype, const char* holds) {
  reserve_shared_memory(reinterpret_cast<const void*>(kernel), bytes, op,
                        detail::concat("head size D = ", d.D, " in ", dtype, " (", holds, " per block)"));
}

}  // namespace

void CudaBackend::recurrent_delta_net(const RecurrentDeltaNetArgs& a) {
  const char* op = "recurrent_delta_net";
  dispatch_float(a.qx.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Dims d = kernels::recurrent_delta_net_dims(a.qx);
    if (d.S == 0) return;  // nothing to write: every output is empty
    const size_t bytes = sizeof(T) * static_cast<size_t>(kernels::RecurrentDeltaNetForwardShared(d.D).total);
    reserve(&rdn_forward_kernel<T>, bytes, op, d, dtype_name(a.qx.dtype()), "the fast weight W [D, D]");
    rdn_forward_kernel<T><<<row_blocks(d.S), kThreads, bytes, stream()>>>(kernels::pointers_of<T>(a), d);
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

void CudaBackend::recurrent_delta_net_backward(const RecurrentDeltaNetBackwardArgs& a) {
  const char* op = "recurrent_delta_net_backward";
  dispatch_float(a.y.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Dims d = kernels::recurrent_delta_net_dims(a.y);
    const int64_t B = a.y.size(1), D = d.D;
    if (d.S == 0 || d.L == 0) {  // no step: the parameters' gradients are empty sums
      for (const Tensor* t : {&a.grad_Rq, &a.grad_Rk, &a.grad_Rv, &a.grad_rb}) fill(*t, 0.0);
      return;
    }
    const Tensor partials = Tensor::empty({d.S, 3 * D * D + D}, a.y.dtype(), a.y.device());
    const size_t bytes = sizeof(T) * static_cast<size_t>(kernels::RecurrentDeltaNetBackwardShared(D, kWarps).total);
    reserve(&rdn_backward_kernel<T>, bytes, op, d, dtype_name(a.y.dtype()), "W and its gradient [D, D]");
    rdn_backward_kernel<T><<<row_blocks(d.S), kThreads, bytes, stream()>>>(kernels::pointers_of<T>(a, partials.data<T>()), d);
    LOOM_CUDA_CHECK_LAUNCH(op);
    rdn_reduce_heads_kernel<T><<<grid_for(d.H * (3 * D * D + D)), kThreads, 0, stream()>>>(
        partials.data<T>(), a.grad_Rq.data<T>(), a.grad_Rk.data<T>(), a.grad_Rv.data<T>(), a.grad_rb.data<T>(), B, d);
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

}  // namespace loom::cuda
