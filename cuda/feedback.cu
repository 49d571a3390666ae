// feedback.cu: CUDA kernels of feedback_attention, one step of attention of a
// query over the feedback memory with relative-position terms (engine/cpu/feedback.cpp):
//   score_j = scale · ((q + u)·k_j + q·P[r0+j] + s[r0+j]),  r0 = R − n
//   out     = Σ_j α_j v_j,  α = softmax(score)
//
// Forward: one thread block per (b, h) row: the scores go to shared memory, the
// softmax subtracts the maximum and sums in double (as on the CPU), then the
// threads split the output features. Only the log-sum-exp is kept.
//
// Backward, with do the output's gradient and delta = do·out:
//   ds_j = scale · α_j · (do·v_j − delta)
//   dq   = Σ_j ds_j (k_j + P[r0+j]),  dk_j = ds_j (q + u),  dv_j = α_j do      (per (b, h))
//   dP[r0+j] += Σ_b ds_j q,  ds[r0+j] += Σ_b ds_j,  du += Σ_j Σ_b ds_j k_j    (per head)
// A first kernel (block per (b, h)) recomputes α from the log-sum-exp, writes
// dq, dk, dv and keeps ds [B·H, n] in scratch; then one thread per element of
// dP, ds and du sums over the batch (and slots). No atomics: the same bits on
// every run.
#include "cuda/block.cuh"
#include "cuda/cuda_backend.h"
#include "engine/kernels/feedback.h"
#include "cuda/layout.cuh"

namespace loom::cuda {

namespace {

using feedback::Inputs;
using feedback::inputs_of;
using feedback::Grads;

// score_j, with q and qu = q + u of this (b, h) in shared memory.
template <class T>
__device__ T score(const Inputs<T>& a, int64_t j, int64_t b, int64_t h, const T* sq, const T* squ) {
  const T* kj = a.k.at(j, b, h);
  const T* pj = a.P_row(j, h);
  T acc = 0;
  for (int64_t d = 0; d < a.D; ++d) acc += squ[d] * kj[d] + sq[d] * pj[d];
  return a.scale * (acc + a.s_at(j, h));
}

// Loads q and q + u of row (b, h) into shared memory (the caller synchronises).
template <class T>
__device__ void load_query(const Inputs<T>& a, int64_t b, int64_t h, T* sq, T* squ) {
  const T* qb = a.q_row(b, h);
  for (int64_t d = threadIdx.x; d < a.D; d += blockDim.x) {
    sq[d] = qb[d];
    squ[d] = qb[d] + a.u[h * a.D + d];
  }
}

// Shared memory: q [D], q + u [D], scores [n].
template <class T>
__global__ void feedback_forward_kernel(Inputs<T> a, T* out, T* lse) {
  T* sq = dynamic_shared<T>();
  T* squ = sq + a.D;
  T* sc = squ + a.D;
  for (int64_t i = blockIdx.x; i < a.B * a.H; i += gridDim.x) {
    const int64_t b = i / a.H, h = i % a.H;
    __syncthreads();  // the previous row is done with the shared rows
    load_query(a, b, h, sq, squ);
    __syncthreads();
    T m = -INFINITY;
    for (int64_t j = threadIdx.x; j < a.n; j += blockDim.x) {
      const T s = score(a, j, b, h, sq, squ);
      sc[j] = s;
      m = s > m ? s : m;
    }
    m = block_max(m);
    double sum = 0.0;
    for (int64_t j = threadIdx.x; j < a.n; j += blockDim.x) {
      const T e = std::exp(sc[j] - m);
      sc[j] = e;
      sum += e;
    }
    sum = block_sum(sum);  // synchronises: every sc[j] is written
    const T inv = static_cast<T>(1.0 / sum);
    if (threadIdx.x == 0) lse[i] = static_cast<T>(static_cast<double>(m) + std::log(sum));
    for (int64_t d = threadIdx.x; d < a.Dv; d += blockDim.x) {
      T acc = 0;
      for (int64_t j = 0; j < a.n; ++j) acc += sc[j] * inv * a.v.at(j, b, h)[d];
      out[i * a.Dv + d] = acc;
    }
  }
}

// Gradient outputs; null pointers are not wanted.
// Per (b, h): dq, dk, dv, and ds [B·H, n] for the parameter sums.
// Shared memory: q [D], q + u [D], do [Dv], α [n], ds [n].
template <class T>
__global__ void feedback_backward_rows_kernel(Inputs<T> a, const T* grad_out, const T* out, const T* lse,
                                              Grads<T> g, T* ds_out) {
  T* sq = dynamic_shared<T>();
  T* squ = sq + a.D;
  T* sdo = squ + a.D;
  T* salpha = sdo + a.Dv;
  T* sds = salpha + a.n;
  const int64_t BH = a.B * a.H;
  for (int64_t i = blockIdx.x; i < BH; i += gridDim.x) {
    const int64_t b = i / a.H, h = i % a.H;
    __syncthreads();
    load_query(a, b, h, sq, squ);
    double part = 0.0;
    for (int64_t d = threadIdx.x; d < a.Dv; d += blockDim.x) {
      const T gd = grad_out[i * a.Dv + d];
      sdo[d] = gd;
      part += static_cast<double>(gd) * out[i * a.Dv + d];
    }
    const T delta = static_cast<T>(block_sum(part));  // synchronises: the shared rows are loaded
    for (int64_t j = threadIdx.x; j < a.n; j += blockDim.x) {
      const T alpha = std::exp(score(a, j, b, h, sq, squ) - lse[i]);
      T dv_dot = 0;
      const T* vj = a.v.at(j, b, h);
      for (int64_t d = 0; d < a.Dv; ++d) dv_dot += sdo[d] * vj[d];
      const T ds = a.scale * alpha * (dv_dot - delta);
      salpha[j] = alpha;
      sds[j] = ds;
      ds_out[i * a.n + j] = ds;
      if (g.k_weights) g.k_weights[j * BH + i] = ds;  // filed for feedback_memory_gradient
      if (g.v_weights) g.v_weights[j * BH + i] = alpha;
    }
    __syncthreads();
    if (g.q) {
      for (int64_t d = threadIdx.x; d < a.D; d += blockDim.x) {
        T acc = 0;
        for (int64_t j = 0; j < a.n; ++j) acc += sds[j] * (a.k.at(j, b, h)[d] + a.P_row(j, h)[d]);
        g.q[i * a.D + d] = acc;
      }
    }
    // dk, dv [n, B, H, *] contiguous, added into: slot j of row i at (j·B·H + i).
    if (g.k)
      for (int64_t e = threadIdx.x; e < a.n * a.D; e += blockDim.x) {
        const int64_t j = e / a.D, d = e % a.D;
        g.k[(j * BH + i) * a.D + d] += sds[j] * squ[d];
      }
    if (g.v)
      for (int64_t e = threadIdx.x; e < a.n * a.Dv; e += blockDim.x) {
        const int64_t j = e / a.Dv, d = e % a.Dv;
        g.v[(j * BH + i) * a.Dv + d] += salpha[j] * sdo[d];
      }
  }
}

// dP[r0+j, h, d] += Σ_b ds[b, h, j] q[b, h, d]: one thread per (j, h, d).
template <class T>
__global__ void feedback_grad_P_kernel(Inputs<T> a, const T* ds, T* gP) {
  LOOM_GRID_STRIDE_LOOP(e, a.n * a.H * a.D) {
    const int64_t j = e / (a.H * a.D), h = (e / a.D) % a.H, d = e % a.D;
    T acc = 0;
    for (int64_t b = 0; b < a.B; ++b) acc += ds[(b * a.H + h) * a.n + j] * a.q[(b * a.H + h) * a.D + d];
    gP[((a.R - a.n + j) * a.H + h) * a.D + d] += acc;
  }
}

// ds[r0+j, h] += Σ_b ds[b, h, j]: one thread per (j, h).
template <class T>
__global__ void feedback_grad_s_kernel(Inputs<T> a, const T* ds, T* gs) {
  LOOM_GRID_STRIDE_LOOP(e, a.n * a.H) {
    const int64_t j = e / a.H, h = e % a.H;
    T acc = 0;
    for (int64_t b = 0; b < a.B; ++b) acc += ds[(b * a.H + h) * a.n + j];
    gs[(a.R - a.n + j) * a.H + h] += acc;
  }
}

// du[h, d] += Σ_j Σ_b ds[b, h, j] k_j[b, h, d]: one thread per (h, d).
template <class T>
__global__ void feedback_grad_u_kernel(Inputs<T> a, const T* ds, T* gu) {
  LOOM_GRID_STRIDE_LOOP(e, a.H * a.D) {
    const int64_t h = e / a.D, d = e % a.D;
    T acc = 0;
    for (int64_t j = 0; j < a.n; ++j)
      for (int64_t b = 0; b < a.B; ++b) acc += ds[(b * a.H + h) * a.n + j] * a.k.at(j, b, h)[d];
    gu[h * a.D + d] += acc;
  }
}

// grads[j, i, d] += Σ_p weights[p, j, i] rows[p, i, d], p in order: one thread per
// (j, i, d) of the rows [0, n).
template <class T>
__global__ void feedback_memory_gradient_kernel(T* grads, const T* weights, const T* rows, int64_t count,
                                                int64_t capacity, int64_t n, int64_t BH, int64_t D) {
  LOOM_GRID_STRIDE_LOOP(e, n * BH * D) {
    const int64_t j = e / (BH * D), i = (e / D) % BH, d = e % D;
    T acc = grads[e];
    for (int64_t p = 0; p < count; ++p) acc += weights[(p * capacity + j) * BH + i] * rows[(p * BH + i) * D + d];
    grads[e] = acc;
  }
}

template <class K>
void reserve(K* kernel, size_t bytes, const char* op, int64_t n, const char* dtype) {
  reserve_shared_memory(reinterpret_cast<const void*>(kernel), bytes, op,
                        detail::concat("feedback attention over n = ", n, " memory slots in ", dtype));
}

// Threads per block: the score loop runs over slots, the output loops over features.
constexpr int kFeedbackThreads = 128;

}  // namespace

void CudaBackend::feedback_attention(const FeedbackAttentionArgs& args) {
  const char* op = "feedback_attention";
  const Tensor &q = args.q, &out = args.out, &lse = args.lse;
  dispatch_float(q.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Inputs<T> a = inputs_of<T>(args);
    const int64_t rows = a.B * a.H;
    if (rows == 0) return;
    const size_t bytes = sizeof(T) * static_cast<size_t>(2 * a.D + a.n);
    reserve(&feedback_forward_kernel<T>, bytes, op, a.n, dtype_name(q.dtype()));
    feedback_forward_kernel<T><<<row_blocks(rows), kFeedbackThreads, bytes, stream()>>>(a, out.data<T>(),
                                                                                          lse.data<T>());
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

void CudaBackend::feedback_attention_backward(const FeedbackAttentionBackwardArgs& args) {
  const char* op = "feedback_attention_backward";
  const Tensor &q = args.q, &grad_out = args.grad_out, &out = args.out, &lse = args.lse;
  dispatch_float(q.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Inputs<T> a = inputs_of<T>(args);
    const int64_t rows = a.B * a.H;
    if (rows == 0) return;  // every gradient is empty (or, for P, s, u, left as given)
    const Grads<T> g = feedback::grads_of<T>(args);
    // ds of every (b, h, j), for the sums over the batch. Scratch from the caching
    // allocator; freeing it before the kernels finish is safe (one stream).
    const Tensor ds = Tensor::empty(Shape{rows, a.n}, q.dtype(), Device::cuda);
    const size_t bytes = sizeof(T) * static_cast<size_t>(2 * a.D + a.Dv + 2 * a.n);
    reserve(&feedback_backward_rows_kernel<T>, bytes, op, a.n, dtype_name(q.dtype()));
    feedback_backward_rows_kernel<T><<<row_blocks(rows), kFeedbackThreads, bytes, stream()>>>(
        a, grad_out.data<T>(), out.data<T>(), lse.data<T>(), g, ds.data<T>());
    LOOM_CUDA_CHECK_LAUNCH(op);
    if (g.P && a.n * a.H * a.D > 0) {
      feedback_grad_P_kernel<T><<<grid_for(a.n * a.H * a.D), kBlockThreads, 0, stream()>>>(a, ds.data<T>(), g.P);
      LOOM_CUDA_CHECK_LAUNCH(op);
    }
    if (g.s && a.n * a.H > 0) {
      feedback_grad_s_kernel<T><<<grid_for(a.n * a.H), kBlockThreads, 0, stream()>>>(a, ds.data<T>(), g.s);
      LOOM_CUDA_CHECK_LAUNCH(op);
    }
    if (g.u && a.H * a.D > 0) {
      feedback_grad_u_kernel<T><<<grid_for(a.H * a.D), kBlockThreads, 0, stream()>>>(a, ds.data<T>(), g.u);
      LOOM_CUDA_CHECK_LAUNCH(op);
    }
  });
}

void CudaBackend::feedback_memory_gradient(const FeedbackMemoryGradientArgs& args) {
  const char* op = "feedback_memory_gradient";
  dispatch_float(args.grads.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Tensor& grads = args.grads;
    const int64_t BH = grads.size(1), D = grads.size(2), total = args.n * BH * D;
    if (total == 0 || args.count == 0) return;
    feedback_memory_gradient_kernel<T><<<grid_for(total), kBlockThreads, 0, stream()>>>(
        grads.data<T>(), args.weights.data<T>(), args.rows.data<T>(), args.count, grads.size(0), args.n, BH, D);
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

}  // namespace loom::cuda
