// loops.h: the loop helpers every CPU kernel uses.
//
// parallel_for splits a range over OpenMP threads only when there is enough
// work to pay for waking them. StridedRows walks any strided layout as a
// sequence of rows along the last axis, so kernels need one general loop and
// keep a fast contiguous path beside it.
#pragma once

#include <array>
#include <cstdint>

#include "engine/shape.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace loom::cpu {

// Below this many elements of work a kernel stays on one thread.
constexpr int64_t kParallelGrain = 1 << 15;

// Calls body(begin, end) over [0, n) in chunks; `cost` is the work per index
// (in elements) used to decide whether threads are worth starting.
template <class Body>
void parallel_for(int64_t n, int64_t cost, Body&& body) {
  if (n <= 0) return;
  if (n * cost < kParallelGrain || n == 1) {
    body(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
#ifdef _OPENMP
    const int64_t threads = omp_get_num_threads();
    const int64_t tid = omp_get_thread_num();
#else
    const int64_t threads = 1, tid = 0;
#endif
    const int64_t chunk = (n + threads - 1) / threads;
    const int64_t begin = tid * chunk;
    const int64_t end = begin + chunk < n ? begin + chunk : n;
    if (begin < end) body(begin, end);
  }
}

// The sum over i < n of term(i), in double. Independent partial sums let the
// compiler vectorise the loop: it may not reorder one running sum without
// -ffast-math, and GCC 12 left `#pragma omp simd reduction` loops scalar inside
// parallel lambdas (4x slower, measured in the softmax kernels).
template <class Term>
double sum_of(int64_t n, Term term) {
  constexpr int kLanes = 16;
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += term(i + k);
  for (; i < n; ++i) acc[0] += term(i);
  double s = 0.0;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  return s;
}

// A shape and N stride vectors (one per operand) walked row by row. Adjacent
// axes that are contiguous for every operand are merged first, so the rows are
// as long as possible.
template <size_t N>
class StridedRows {
 public:
  StridedRows(const Shape& shape, const std::array<Strides, N>& strides) {
    // Drop size-1 axes, merge axes that are contiguous in every operand.
    for (size_t d = 0; d < shape.size(); ++d) {
      if (shape[d] == 1) continue;
      if (!shape_.empty()) {
        bool mergeable = true;
        for (size_t k = 0; k < N; ++k)
          if (strides_[k].back() != strides[k][d] * shape[d]) mergeable = false;
        if (mergeable) {
          shape_.back() *= shape[d];
          for (size_t k = 0; k < N; ++k) strides_[k].back() = strides[k][d];
          continue;
        }
      }
      shape_.push_back(shape[d]);
      for (size_t k = 0; k < N; ++k) strides_[k].push_back(strides[k][d]);
    }
    if (shape_.empty()) {
      shape_.push_back(1);
      for (size_t k = 0; k < N; ++k) strides_[k].push_back(0);
    }
    inner_ = shape_.back();
    rows_ = 1;
    for (size_t d = 0; d + 1 < shape_.size(); ++d) rows_ *= shape_[d];
    for (size_t k = 0; k < N; ++k) inner_stride_[k] = strides_[k].back();
  }

  int64_t rows() const { return rows_; }
  int64_t inner() const { return inner_; }
  int64_t inner_stride(size_t k) const { return inner_stride_[k]; }

  // Element offsets of each operand at the start of row `row`.
  std::array<int64_t, N> row_offsets(int64_t row) const {
    std::array<int64_t, N> off{};
    for (size_t d = shape_.size() - 1; d-- > 0;) {
      const int64_t i = row % shape_[d];
      row /= shape_[d];
      for (size_t k = 0; k < N; ++k) off[k] += i * strides_[k][d];
    }
    return off;
  }

 private:
  Shape shape_;
  std::array<Strides, N> strides_;
  std::array<int64_t, N> inner_stride_{};
  int64_t rows_ = 1, inner_ = 1;
};

}  // namespace loom::cpu

