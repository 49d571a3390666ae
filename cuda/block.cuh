// block.cuh: what the row-wise kernels (softmax, norm, attention, delta_rule,
// feedback) share: warp and block reductions, a block's dynamic shared memory,
// and the launch shape of "one thread block per row" kernels.
//
// Reductions are deterministic: a block of a given size always combines its
// values in the same order, so a kernel gives the same bits run after run.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cuda/runtime.h"

namespace loom::cuda {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

template <class T>
struct SumOp {
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};

// The larger of two values. Each thread's partial maximum skips NaN (as the CPU's
// row_max does: `x > m` is false for NaN), so partials are never NaN; a NaN in a
// row still turns the row's results into NaN through exp(NaN - m).
template <class T>
struct MaxOp {
  __device__ __forceinline__ T operator()(T a, T b) const { return b > a ? b : a; }
};

// Reduces v over the 32 lanes of a warp; every lane gets the result. The xor
// butterfly combines the same pairs on every lane (in swapped order, which for
// + and max gives the same bits), so all lanes hold identical values.
template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Reduces v over the whole block; every thread gets the result. Every thread of
// the block must call it (it synchronises), and blockDim.x must be a multiple of 32.
template <class T, class Op>
__device__ __forceinline__ T block_reduce(T v, Op op) {
  __shared__ T partial[kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_reduce(v, op);
  __syncthreads();  // an earlier call's readers are done with partial[]
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  T r = partial[0];
  for (int w = 1; w < warps; ++w) r = op(r, partial[w]);  // the same order in every thread
  return r;
}

template <class T>
__device__ __forceinline__ T block_sum(T v) {
  return block_reduce(v, SumOp<T>{});
}

template <class T>
__device__ __forceinline__ T block_max(T v) {
  return block_reduce(v, MaxOp<T>{});
}

// The block's dynamic shared memory (the launch's third <<<>>> argument) as T[].
// One untyped array for all kernels: templated kernels may not each declare an
// `extern __shared__ T[]` of their own T.
template <class T>
__device__ __forceinline__ T* dynamic_shared() {
  extern __shared__ __align__(16) unsigned char loom_dynamic_shared[];
  return reinterpret_cast<T*>(loom_dynamic_shared);
}

// Threads for a block that walks a row of n elements: a power of two from one
// warp to kBlockThreads, so short rows (a small vocabulary) leave few threads idle.
inline int row_threads(int64_t n) {
  int threads = kWarp;
  while (threads < kBlockThreads && threads < n) threads *= 2;
  return threads;
}

// Blocks for a grid-stride loop over rows (`for (r = blockIdx.x; r < rows; r += gridDim.x)`):
// one per row up to a cap, far above what fills a GPU.
inline int row_blocks(int64_t rows) { return static_cast<int>(std::clamp<int64_t>(rows, 1, int64_t{1} << 20)); }

}  // namespace loom::cuda
