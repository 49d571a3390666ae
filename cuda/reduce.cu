// reduce.cu: the CUDA reduction kernel (sum, max, argmax over any axes).
//
// As on the CPU (engine/cpu/reduce.cpp), x's axes are split into kept and
// reduced ones, each walked through its own layout (no copy), and output
// element o is reduced over its block of n_red elements. Two kernels:
//   - many outputs, short blocks: one thread per output;
//   - otherwise: one thread block per output, combined in shared memory.
// Float sums accumulate in double, as on the CPU, so results agree to float
// rounding whatever the summation order.
#include <algorithm>
#include <cmath>

#include "cuda/cuda_backend.h"
#include "cuda/layout.cuh"

namespace loom::cuda {

namespace {

// Each reducer: an accumulator type, its start value, step (one element at
// flat position i of the reduced block), combine (two partial results, the
// first covering earlier positions or not) and finish.
template <class T>
struct SumR {
  using Acc = double;
  using Out = T;
  __host__ __device__ static Acc init() { return 0.0; }
  __host__ __device__ static void step(Acc& acc, T v, int64_t) { acc += static_cast<double>(v); }
  __host__ __device__ static void combine(Acc& acc, const Acc& other) { acc += other; }
  __host__ __device__ static Out finish(const Acc& acc) { return static_cast<T>(acc); }
};

template <class T>
struct MaxR {
  using Acc = T;
  using Out = T;
  __host__ __device__ static Acc init() { return -INFINITY; }
  // NaN wins, so a NaN anywhere in the block shows in the result (as on the CPU).
  __host__ __device__ static void step(Acc& acc, T v, int64_t) {
    if (v > acc || v != v) acc = v;  // v != v: NaN
  }
  __host__ __device__ static void combine(Acc& acc, const Acc& other) { step(acc, other, 0); }
  __host__ __device__ static Out finish(const Acc& acc) { return acc; }
};

template <class T>
struct ArgmaxR {
  struct Acc {
    T best;
    int64_t index;
  };
  using Out = int64_t;
  // Index 0 when nothing beats -inf: the CPU's answer for an all -inf/NaN block.
  __host__ __device__ static Acc init() { return {static_cast<T>(-INFINITY), 0}; }
  __host__ __device__ static void step(Acc& acc, T v, int64_t i) {
    if (v > acc.best) acc = {v, i};  // strict: each thread sees its positions in order, keeps the first
  }
  // Ties go to the smaller index, so the result is the first maximum, as on the CPU.
  __host__ __device__ static void combine(Acc& acc, const Acc& other) {
    if (other.best > acc.best || (other.best == acc.best && other.index < acc.index)) acc = other;
  }
  __host__ __device__ static Out finish(const Acc& acc) { return acc.index; }
};

// One thread per output element.
template <class T, class R>
__global__ void reduce_thread_kernel(const T* x, typename R::Out* out, int64_t n_out, int64_t n_red,
                                     Layout<1> kept, Layout<1> red) {
  LOOM_GRID_STRIDE_LOOP(o, n_out) {
    int64_t base[1], off[1];
    kept.offsets(o, base);
    typename R::Acc acc = R::init();
    for (int64_t j = 0; j < n_red; ++j) {
      red.offsets(j, off);
      R::step(acc, x[base[0] + off[0]], j);
    }
    out[o] = R::finish(acc);
  }
}

// One block per output element: threads stride over the block, then a tree
// reduction in shared memory.
template <class T, class R>
__global__ void reduce_block_kernel(const T* x, typename R::Out* out, int64_t n_out, int64_t n_red,
                                    Layout<1> kept, Layout<1> red) {
  __shared__ typename R::Acc partial[kBlockThreads];
  for (int64_t o = blockIdx.x; o < n_out; o += gridDim.x) {
    int64_t base[1], off[1];
    kept.offsets(o, base);
    typename R::Acc acc = R::init();
    for (int64_t j = threadIdx.x; j < n_red; j += blockDim.x) {
      red.offsets(j, off);
      R::step(acc, x[base[0] + off[0]], j);
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int width = blockDim.x / 2; width > 0; width /= 2) {
      if (static_cast<int>(threadIdx.x) < width) R::combine(partial[threadIdx.x], partial[threadIdx.x + width]);
      __syncthreads();
    }
    if (threadIdx.x == 0) out[o] = R::finish(partial[0]);
    __syncthreads();  // partial[] is reused by the next output
  }
}

// x's axes split into kept and reduced ones, each as a layout of x's strides.
struct ReducePlan {
  Layout<1> kept, red;
  int64_t n_out = 0, n_red = 0;
};

ReducePlan plan_reduce(const Tensor& x, const std::vector<int>& axes) {
  Shape kept_shape, red_shape;
  Strides kept_strides, red_strides;
  for (int d = 0; d < x.dim(); ++d) {
    const bool reduced = std::find(axes.begin(), axes.end(), d) != axes.end();
    (reduced ? red_shape : kept_shape).push_back(x.shape()[d]);
    (reduced ? red_strides : kept_strides).push_back(x.strides()[d]);
  }
  ReducePlan p;
  p.kept = make_layout<1>(kept_shape, {&kept_strides}, "reduce");
  p.red = make_layout<1>(red_shape, {&red_strides}, "reduce");
  p.n_out = shape_numel(kept_shape);
  p.n_red = shape_numel(red_shape);
  return p;
}

// A block per output pays off once each output has enough elements to share
// among its threads; with many short outputs, a thread each keeps all busy.
bool block_per_output(const ReducePlan& p) { return p.n_red >= 128 && p.n_out < (int64_t{1} << 16); }

template <class T, class R>
void reduce_typed(const Tensor& x, const std::vector<int>& axes, const Tensor& out) {
  const ReducePlan p = plan_reduce(x, axes);
  if (p.n_out == 0) return;
  const T* px = x.data<T>();
  auto* po = out.data<typename R::Out>();
  if (block_per_output(p)) {
    reduce_block_kernel<T, R><<<static_cast<int>(p.n_out), kBlockThreads, 0, stream()>>>(px, po, p.n_out, p.n_red,
                                                                                          p.kept, p.red);
  } else {
    reduce_thread_kernel<T, R><<<grid_for(p.n_out), kBlockThreads, 0, stream()>>>(px, po, p.n_out, p.n_red, p.kept,
                                                                                   p.red);
  }
  LOOM_CUDA_CHECK_LAUNCH("reduce");
}

}  // namespace

void CudaBackend::reduce(ReduceOp op, const Tensor& x, const std::vector<int>& axes, const Tensor& out) {
  LOOM_CHECK(out.is_contiguous(), "reduce on cuda: the output must be contiguous, got ", out.describe());
  dispatch_float(x.dtype(), "reduce", [&](auto zero) {
    using T = decltype(zero);
    switch (op) {
      case ReduceOp::sum: reduce_typed<T, SumR<T>>(x, axes, out); break;
      case ReduceOp::max: reduce_typed<T, MaxR<T>>(x, axes, out); break;
      case ReduceOp::argmax: reduce_typed<T, ArgmaxR<T>>(x, axes, out); break;
    }
  });
}

}  // namespace loom::cuda
