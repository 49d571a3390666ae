// layout.cuh: how kernels walk strided tensors.
//
// A Layout<N> holds one shape and the strides of N operands (the output first)
// in a small fixed-size struct that is passed to the kernel by value. Before
// that, size-1 axes are dropped and adjacent axes that are contiguous for every
// operand are merged, so a contiguous tensor (or a contiguous one with a
// broadcast scalar) becomes one axis and its offsets cost no division.
#pragma once

#include <array>
#include <cstdint>

#include "cuda/runtime.h"
#include "engine/shape.h"

namespace loom::cuda {

// Axes left after merging; more would need a general fallback nobody has asked for.
constexpr int kMaxDims = 8;

template <int N>
struct Layout {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};

  // Element offsets (from each operand's data pointer) of logical element i,
  // counted row-major over the shape. (Host too, for tests of the indexing.)
  __host__ __device__ __forceinline__ void offsets(int64_t i, int64_t (&off)[N]) const {
    for (int k = 0; k < N; ++k) off[k] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      int64_t index = i;
      if (d > 0) {  // the outermost axis needs no division
        const int64_t q = i / shape[d];
        index = i - q * shape[d];
        i = q;
      }
      for (int k = 0; k < N; ++k) off[k] += index * strides[k][d];
    }
  }
};

// Builds the merged layout of `shape` for N operands; `op` names the caller in
// the error when too many axes remain.
template <int N>
Layout<N> make_layout(const Shape& shape, const std::array<const Strides*, N>& strides, const char* op) {
  Layout<N> l;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (l.ndim > 0) {
      bool mergeable = true;
      for (int k = 0; k < N; ++k)
        if (l.strides[k][l.ndim - 1] != (*strides[k])[d] * shape[d]) mergeable = false;
      if (mergeable) {
        l.shape[l.ndim - 1] *= shape[d];
        for (int k = 0; k < N; ++k) l.strides[k][l.ndim - 1] = (*strides[k])[d];
        continue;
      }
    }
    LOOM_CHECK(l.ndim < kMaxDims, op, " on cuda: the operands' layout has more than ", kMaxDims,
               " axes that cannot be merged (shape ", shape_str(shape), "); make an operand contiguous first");
    l.shape[l.ndim] = shape[d];
    for (int k = 0; k < N; ++k) l.strides[k][l.ndim] = (*strides[k])[d];
    ++l.ndim;
  }
  return l;
}

// for (i = this thread; i < n; i += all threads) body(i): covers any n with a
// grid sized by grid_for(n).
#define LOOM_GRID_STRIDE_LOOP(i, n)                                                        \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// Runs body(off) for every element of an N-operand layout; body writes the
// output at off[0] and reads operand k at off[k].
template <int N, class Body>
__global__ void elementwise_kernel(int64_t n, Layout<N> layout, Body body) {
  LOOM_GRID_STRIDE_LOOP(i, n) {
    int64_t off[N];
    layout.offsets(i, off);
    body(off);
  }
}

template <int N, class Body>
void launch_elementwise(const char* op, const Shape& shape, const std::array<const Strides*, N>& strides,
                        const Body& body) {
  const int64_t n = shape_numel(shape);
  if (n == 0) return;
  const Layout<N> layout = make_layout<N>(shape, strides, op);
  elementwise_kernel<N, Body><<<grid_for(n), kBlockThreads, 0, stream()>>>(n, layout, body);
  LOOM_CUDA_CHECK_LAUNCH(op);
}

}  // namespace loom::cuda
