// reduce.cpp: the CPU reduction kernel (sum, max, argmax over any axes).
//
// The output has x's shape with the reduced axes set to 1. We view x as
// [kept..., reduced...] by reordering strides (no copy) and reduce each output
// element over its block. Two layouts get a dedicated loop because training hits
// them constantly: reducing a contiguous trailing block (row sums) and reducing
// leading axes of a contiguous tensor (bias gradients, sum_to).
#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"

namespace loom {

using cpu::parallel_for;
using cpu::StridedRows;

namespace {

template <class T>
struct SumAcc {
  using Acc = double;  // accumulate float sums in double: loss sums span many orders of magnitude
  static Acc init() { return 0.0; }
  static void step(Acc& acc, T v, int64_t) { acc += v; }
  static T finish(Acc acc) { return static_cast<T>(acc); }
};

template <class T>
struct MaxAcc {
  using Acc = T;
  static Acc init() { return -std::numeric_limits<T>::infinity(); }
  static void step(Acc& acc, T v, int64_t) {
    if (v > acc || std::isnan(v)) acc = v;
  }
  static T finish(Acc acc) { return acc; }
};

template <class T>
struct ArgmaxAcc {
  struct Acc { T best; int64_t index; };
  static Acc init() { return {-std::numeric_limits<T>::infinity(), 0}; }
  static void step(Acc& acc, T v, int64_t i) {
    if (v > acc.best) acc = {v, i};  // ties keep the first index
  }
  static int64_t finish(Acc acc) { return acc.index; }
};

template <class T, class R, class Out>
void reduce_general(const Tensor& x, const std::vector<int>& axes, const Tensor& out) {
  const T* px = x.data<T>();
  Out* po = out.data<Out>();
  // Split x's dims into kept and reduced.
  Shape kept_shape, red_shape;
  Strides kept_strides, red_strides;
  for (int d = 0; d < x.dim(); ++d) {
    if (std::find(axes.begin(), axes.end(), d) != axes.end()) {
      red_shape.push_back(x.shape()[d]);
      red_strides.push_back(x.strides()[d]);
    } else {
      kept_shape.push_back(x.shape()[d]);
      kept_strides.push_back(x.strides()[d]);
    }
  }
  const int64_t n_out = shape_numel(kept_shape);
  const int64_t n_red = shape_numel(red_shape);

  // Fast path: x contiguous and the reduced axes are the trailing ones.
  const bool trailing = x.is_contiguous() && !axes.empty() && axes.back() == x.dim() - 1 &&
                        axes.front() == x.dim() - static_cast<int>(axes.size());
  if (trailing) {
    parallel_for(n_out, n_red, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        auto acc = R::init();
        const T* row = px + o * n_red;
        for (int64_t i = 0; i < n_red; ++i) R::step(acc, row[i], i);
        po[o] = R::finish(acc);
      }
    });
    return;
  }

  StridedRows<1> kept(kept_shape, {kept_strides});
  StridedRows<1> red(red_shape, {red_strides});
  const int64_t kin = kept.inner(), ks = kept.inner_stride(0);
  const int64_t rin = red.inner(), rs = red.inner_stride(0);
  parallel_for(n_out, n_red, [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      const int64_t base = kept.row_offsets(o / kin)[0] + (o % kin) * ks;
      auto acc = R::init();
      int64_t i = 0;
      for (int64_t r = 0; r < red.rows(); ++r) {
        const T* p = px + base + red.row_offsets(r)[0];
        for (int64_t j = 0; j < rin; ++j, ++i) R::step(acc, p[j * rs], i);
      }
      po[o] = R::finish(acc);
    }
  });
}

// Sum over leading axes of a contiguous tensor: out[j] = sum_i x[i, j]. Walks x
// row by row (cache friendly) with each thread owning a slice of columns.
template <class T>
void sum_leading(const T* px, T* po, int64_t rows, int64_t cols) {
  parallel_for(cols, rows, [&](int64_t b, int64_t e) {
    std::vector<double> acc(e - b, 0.0);
    for (int64_t i = 0; i < rows; ++i) {
      const T* row = px + i * cols;
      for (int64_t j = b; j < e; ++j) acc[j - b] += row[j];
    }
    for (int64_t j = b; j < e; ++j) po[j] = static_cast<T>(acc[j - b]);
  });
}

}  // namespace

void CpuBackend::reduce(ReduceOp op, const Tensor& x, const std::vector<int>& axes, const Tensor& out) {
  dispatch_float(x.dtype(), "reduce", [&](auto zero) {
    using T = decltype(zero);
    switch (op) {
      case ReduceOp::sum: {
        const bool leading = x.is_contiguous() && !axes.empty() && axes.front() == 0 &&
                             axes.back() == static_cast<int>(axes.size()) - 1 &&
                             static_cast<int64_t>(axes.size()) < x.dim();
        if (leading) {
          int64_t rows = 1, cols = 1;
          for (int d = 0; d < x.dim(); ++d) (d < static_cast<int>(axes.size()) ? rows : cols) *= x.shape()[d];
          sum_leading<T>(x.data<T>(), out.data<T>(), rows, cols);
        } else {
          reduce_general<T, SumAcc<T>, T>(x, axes, out);
        }
        break;
      }
      case ReduceOp::max: reduce_general<T, MaxAcc<T>, T>(x, axes, out); break;
      case ReduceOp::argmax: reduce_general<T, ArgmaxAcc<T>, int64_t>(x, axes, out); break;
    }
  });
}

}  // namespace loom
