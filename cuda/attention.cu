// attention.cu: CUDA kernels of fused scaled dot-product attention.
//
// A straightforward version of the CPU's algorithm (engine/cpu/attention.cpp),
// with the same numerics: scores are float dot products times the scale, the
// softmax subtracts the row maximum and sums in double, and only each row's
// logsumexp is kept for the backward. Dropout factors are regenerated from the
// Philox counters of backend.h's layout (element e = ((b·H + h)·Lq + i)·Lk + j
// uses word e % 4 of block offset + e / 4), so both devices drop the same
// probabilities.
//
//   forward      one block per query row (b, h, i): scores into shared memory,
//                softmax, dropout, then the threads split the output features.
//   backward A   one block per query row: rebuilds P = exp(scale·q·k - lse),
//                dP = dO·v (times the dropout factor), delta = Σ_j dP·P, then
//                dS = P ∘ (dP - delta) and dQ = scale · dS K. Saves delta.
//   backward B   one block per key row (b, h, j): rebuilds the column of P and
//                dS from delta, then dV = Σ_i Pd_ij dO_i and dK = scale · Σ_i dS_ij q_i.
// No atomics: each gradient row is written by one block, so the results have
// the same bits on every run.
//
// Shared memory per block holds a query (or key and value) row and one row (or
// column) of scores: (D + Lk)·sizeof(T) in the forward, about twice that in the
// backward. Past 48 KiB the kernels opt in to more (runtime.h); lengths whose
// scores do not fit in a block's shared memory are refused with an error.
#include "cuda/block.cuh"
#include "cuda/cuda_backend.h"
#include "engine/philox.h"
#include "engine/kernels/sequence_rows.h"

namespace loom::cuda {

namespace {

using Args = Backend::AttentionArgs;

// The geometry shared by the kernels.
struct Dims {
  int64_t Lq, Lk, B, H, D, Dv;
  // Keys query row i may see: all, or those up to its position Lk - Lq + i.
  __device__ int64_t visible(bool causal, int64_t i) const { return causal ? Lk - Lq + i + 1 : Lk; }
};

// q, k, v [L, B, H, *] read through their strides (engine/kernels/sequence_rows.h).
template <class T>
using Rows = SequenceRows<T>;

template <class T>
__device__ __forceinline__ T dot(const T* a, const T* b, int64_t n) {
  T acc = 0;
  for (int64_t d = 0; d < n; ++d) acc += a[d] * b[d];
  return acc;
}

// Dropout as the kernels apply it, computed once on the host: the keep threshold
// and the kept factor 1/(1-p) (engine/philox.h), and the Philox key and offset.
template <class T>
struct Dropout {
  bool active;
  uint64_t seed, offset, threshold;
  T kept;
};

template <class T>
Dropout<T> dropout_of(const Args& a) {
  const double keep = 1.0 - a.dropout_p;
  return {a.dropout_p > 0, a.seed, a.offset, dropout_keep_threshold(keep), static_cast<T>(1.0 / keep)};
}

// The dropout factor of probability e: 0, or 1/(1-p) for a kept one.
template <class T>
__device__ __forceinline__ T dropout_factor_at(uint64_t e, const Dropout<T>& d) {
  const std::array<uint32_t, 4> words = philox4x32(d.offset + e / 4, d.seed);
  return dropout_factor(words[e % 4], d.threshold, d.kept);
}

// Flat index of probability (b, h, i, 0) = (pair·Lq + i)·Lk: the dropout counter layout.
__device__ __forceinline__ uint64_t prob_index(const Dims& g, int64_t pair, int64_t i) {
  return static_cast<uint64_t>((pair * g.Lq + i) * g.Lk);
}

// Copies n elements to shared memory (all threads; the caller synchronises).
template <class T>
__device__ __forceinline__ void load_row(T* dst, const T* src, int64_t n) {
  for (int64_t d = threadIdx.x; d < n; d += blockDim.x) dst[d] = src[d];
}

// Shared memory: q row [D], then probabilities [Lk].
template <class T>
__global__ void attention_forward_kernel(Rows<T> q, Rows<T> k, Rows<T> v, Dims g, Args a, Dropout<T> drop, T* out,
                                         T* lse) {
  T* sq = dynamic_shared<T>();
  T* sp = sq + g.D;
  const T scale = static_cast<T>(a.scale);
  for (int64_t row = blockIdx.x; row < g.B * g.H * g.Lq; row += gridDim.x) {
    const int64_t pair = row / g.Lq, i = row % g.Lq, b = pair / g.H, h = pair % g.H;
    const int64_t n = g.visible(a.causal, i);
    __syncthreads();  // the previous row is done with sq and sp
    load_row(sq, q.at(i, b, h), g.D);
    __syncthreads();
    T m = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const T s = dot(sq, k.at(j, b, h), g.D) * scale;
      sp[j] = s;
      m = s > m ? s : m;
    }
    m = block_max(m);
    double sum = 0.0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const T e = std::exp(sp[j] - m);
      sp[j] = e;
      sum += e;
    }
    sum = block_sum(sum);
    if (threadIdx.x == 0) lse[row] = static_cast<T>(m + std::log(sum));  // lse [B, H, Lq]: index row
    const T inv = static_cast<T>(1.0 / sum);
    const uint64_t e0 = prob_index(g, pair, i);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      T p = sp[j] * inv;
      if (drop.active) p *= dropout_factor_at(e0 + j, drop);
      sp[j] = p;
    }
    __syncthreads();
    T* o = out + ((i * g.B + b) * g.H + h) * g.Dv;
    for (int64_t d = threadIdx.x; d < g.Dv; d += blockDim.x) {
      T acc = 0;
      for (int64_t j = 0; j < n; ++j) acc += sp[j] * v.at(j, b, h)[d];
      o[d] = acc;
    }
  }
}

// Backward A. Shared memory: q row [D], dO row [Dv], P [Lk], dP then dS [Lk].
template <class T>
__global__ void attention_backward_rows_kernel(Rows<T> q, Rows<T> k, Rows<T> v, Rows<T> dout, const T* lse,
                                               Dims g, Args a, Dropout<T> drop, T* delta, T* gq) {
  T* sq = dynamic_shared<T>();
  T* sdo = sq + g.D;
  T* sp = sdo + g.Dv;
  T* sds = sp + g.Lk;
  const T scale = static_cast<T>(a.scale);
  for (int64_t row = blockIdx.x; row < g.B * g.H * g.Lq; row += gridDim.x) {
    const int64_t pair = row / g.Lq, i = row % g.Lq, b = pair / g.H, h = pair % g.H;
    const int64_t n = g.visible(a.causal, i);
    __syncthreads();
    load_row(sq, q.at(i, b, h), g.D);
    load_row(sdo, dout.at(i, b, h), g.Dv);
    __syncthreads();
    const T l = lse[row];
    const uint64_t e0 = prob_index(g, pair, i);
    double acc = 0.0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const T p = std::exp(dot(sq, k.at(j, b, h), g.D) * scale - l);
      T dp = dot(sdo, v.at(j, b, h), g.Dv);  // gradient of the dropped probability
      if (drop.active) dp *= dropout_factor_at(e0 + j, drop);
      sp[j] = p;
      sds[j] = dp;
      acc += static_cast<double>(dp) * p;
    }
    const T dlt = static_cast<T>(block_sum(acc));
    if (threadIdx.x == 0) delta[row] = dlt;
    // dS = P ∘ (dP - Σ_j dP_j P_j); masked keys have P = 0, so dS = 0 there (not stored).
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) sds[j] = sp[j] * (sds[j] - dlt);
    __syncthreads();
    T* o = gq + ((i * g.B + b) * g.H + h) * g.D;
    for (int64_t d = threadIdx.x; d < g.D; d += blockDim.x) {
      T s = 0;
      for (int64_t j = 0; j < n; ++j) s += sds[j] * k.at(j, b, h)[d];
      o[d] = s * scale;
    }
  }
}

// Backward B. Shared memory: k row [D], v row [Dv], Pd [Lq], dS [Lq].
template <class T>
__global__ void attention_backward_cols_kernel(Rows<T> q, Rows<T> k, Rows<T> v, Rows<T> dout, const T* lse,
                                               const T* delta, Dims g, Args a, Dropout<T> drop, T* gk,
                                               T* gv) {
  T* sk = dynamic_shared<T>();
  T* sv = sk + g.D;
  T* spd = sv + g.Dv;
  T* sds = spd + g.Lq;
  const T scale = static_cast<T>(a.scale);
  for (int64_t col = blockIdx.x; col < g.B * g.H * g.Lk; col += gridDim.x) {
    const int64_t pair = col / g.Lk, j = col % g.Lk, b = pair / g.H, h = pair % g.H;
    // Queries that see key j: all, or those at positions Lk - Lq + i >= j.
    const int64_t first = a.causal && j > g.Lk - g.Lq ? j - (g.Lk - g.Lq) : 0;
    __syncthreads();
    load_row(sk, k.at(j, b, h), g.D);
    load_row(sv, v.at(j, b, h), g.Dv);
    __syncthreads();
    for (int64_t i = first + threadIdx.x; i < g.Lq; i += blockDim.x) {
      const T p = std::exp(dot(q.at(i, b, h), sk, g.D) * scale - lse[pair * g.Lq + i]);
      T dp = dot(dout.at(i, b, h), sv, g.Dv);
      T pd = p;
      if (drop.active) {
        const T f = dropout_factor_at(prob_index(g, pair, i) + j, drop);
        pd = p * f;
        dp *= f;
      }
      spd[i] = pd;
      sds[i] = p * (dp - delta[pair * g.Lq + i]);
    }
    __syncthreads();
    T* ov = gv + ((j * g.B + b) * g.H + h) * g.Dv;
    for (int64_t d = threadIdx.x; d < g.Dv; d += blockDim.x) {
      T s = 0;
      for (int64_t i = first; i < g.Lq; ++i) s += spd[i] * dout.at(i, b, h)[d];
      ov[d] = s;
    }
    T* ok = gk + ((j * g.B + b) * g.H + h) * g.D;
    for (int64_t d = threadIdx.x; d < g.D; d += blockDim.x) {
      T s = 0;
      for (int64_t i = first; i < g.Lq; ++i) s += sds[i] * q.at(i, b, h)[d];
      ok[d] = s * scale;
    }
  }
}

Dims dims_of(const Tensor& q, const Tensor& k, const Tensor& v) {
  return {q.size(0), k.size(0), q.size(1), q.size(2), q.size(3), v.size(3)};
}

// Threads per block: the score loops run over keys (or queries), the output
// loops over features; 128 threads keep both reasonably busy for typical sizes.
constexpr int kAttentionThreads = 128;

template <class K>
void reserve(K* kernel, size_t bytes, const char* op, const Dims& g, const char* dtype) {
  reserve_shared_memory(reinterpret_cast<const void*>(kernel), bytes, op,
                        detail::concat("attention with Lq = ", g.Lq, ", Lk = ", g.Lk, ", D = ", g.D, ", Dv = ", g.Dv,
                                       " in ", dtype));
}

}  // namespace

void CudaBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args,
                            const Tensor& out, const Tensor& lse) {
  const char* op = "attention";
  dispatch_float(q.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Dims g = dims_of(q, k, v);
    const int64_t rows = g.B * g.H * g.Lq;
    if (rows == 0) return;  // (the op refuses Lk = 0 for Lq > 0)
    const size_t bytes = sizeof(T) * static_cast<size_t>(g.D + g.Lk);
    reserve(&attention_forward_kernel<T>, bytes, op, g, dtype_name(q.dtype()));
    attention_forward_kernel<T><<<row_blocks(rows), kAttentionThreads, bytes, stream()>>>(
        rows_of<T>(q), rows_of<T>(k), rows_of<T>(v), g, args, dropout_of<T>(args), out.data<T>(),
        lse.data<T>());
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

void CudaBackend::attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& lse, const AttentionArgs& args, const Tensor& grad_q,
                                     const Tensor& grad_k, const Tensor& grad_v) {
  const char* op = "attention_backward";
  dispatch_float(q.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const Dims g = dims_of(q, k, v);
    const int64_t rows = g.B * g.H * g.Lq, cols = g.B * g.H * g.Lk;
    if (rows == 0 || cols == 0) {  // no query sees any key: every gradient is zero
      if (grad_q.numel() > 0) fill(grad_q, 0.0);
      if (grad_k.numel() > 0) fill(grad_k, 0.0);
      if (grad_v.numel() > 0) fill(grad_v, 0.0);
      return;
    }
    // delta_i = Σ_j dP_ij P_ij of each query row, from pass A for pass B.
    const Tensor delta = Tensor::empty({rows}, q.dtype(), Device::cuda);
    const char* dtype = dtype_name(q.dtype());
    const size_t bytes_a = sizeof(T) * static_cast<size_t>(g.D + g.Dv + 2 * g.Lk);
    reserve(&attention_backward_rows_kernel<T>, bytes_a, op, g, dtype);
    attention_backward_rows_kernel<T><<<row_blocks(rows), kAttentionThreads, bytes_a, stream()>>>(
        rows_of<T>(q), rows_of<T>(k), rows_of<T>(v), rows_of<T>(grad_out), lse.data<T>(), g, args,
        dropout_of<T>(args), delta.data<T>(), grad_q.data<T>());
    LOOM_CUDA_CHECK_LAUNCH(op);
    const size_t bytes_b = sizeof(T) * static_cast<size_t>(g.D + g.Dv + 2 * g.Lq);
    reserve(&attention_backward_cols_kernel<T>, bytes_b, op, g, dtype);
    attention_backward_cols_kernel<T><<<row_blocks(cols), kAttentionThreads, bytes_b, stream()>>>(
        rows_of<T>(q), rows_of<T>(k), rows_of<T>(v), rows_of<T>(grad_out), lse.data<T>(), delta.data<T>(), g,
        args, dropout_of<T>(args), grad_k.data<T>(), grad_v.data<T>());
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

}  // namespace loom::cuda
