// index.cpp: CPU kernels for index_select, index_add, gather and scatter_add.
//
// Each kernel views its tensors as [outer, axis, inner]: the dims before the
// indexed axis, the axis itself, the dims after it. The element offsets of the
// outer and of the inner positions are listed once per call, so every layout
// (contiguous, transposed, narrowed) runs through the same loops. When the inner
// block is one dense run in every operand (the usual case, e.g. embedding rows)
// the innermost loop is a plain copy or add that the compiler vectorises.
//
// The ids are already range-checked by the ops (engine/ops/index.cpp).
//
// index_add and scatter_add may hit one target slot many times (repeated ids).
// They split the work over outer positions or over inner positions, which two
// threads never share, and walk the ids in order on one thread: duplicates
// accumulate without races, in the same order for any thread count.
#include <algorithm>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"

namespace loom {

using cpu::parallel_for;
using cpu::StridedRows;

namespace {

// Offsets (in elements) of every position of `shape`, in row-major order.
std::vector<int64_t> offsets_of(const Shape& shape, const Strides& strides) {
  std::vector<int64_t> off;
  if (shape_numel(shape) == 0) return off;
  off.reserve(shape_numel(shape));
  StridedRows<1> it(shape, {strides});
  for (int64_t r = 0; r < it.rows(); ++r) {
    const int64_t base = it.row_offsets(r)[0];
    for (int64_t j = 0; j < it.inner(); ++j) off.push_back(base + j * it.inner_stride(0));
  }
  return off;
}

// A tensor seen as [outer, axis, inner].
struct AxisView {
  std::vector<int64_t> outer;  // offset of each outer position
  std::vector<int64_t> inner;  // offset of each inner position
  int64_t axis_stride = 0;
  bool dense = true;           // inner[j] == j: an inner block is one contiguous run
};

AxisView axis_view(const Shape& shape, const Strides& strides, int axis) {
  AxisView v;
  v.outer = offsets_of(Shape(shape.begin(), shape.begin() + axis), Strides(strides.begin(), strides.begin() + axis));
  v.inner = offsets_of(Shape(shape.begin() + axis + 1, shape.end()),
                       Strides(strides.begin() + axis + 1, strides.end()));
  v.axis_stride = strides[axis];
  for (size_t j = 0; j < v.inner.size(); ++j)
    if (v.inner[j] != static_cast<int64_t>(j)) v.dense = false;
  return v;
}

AxisView axis_view(const Tensor& t, int axis) { return axis_view(t.shape(), t.strides(), axis); }

// `big` seen through the shape of `small` except along axis: gather reads and
// scatter_add writes only the positions ids cover (ids may be smaller than x in
// the other dims, as in torch.gather).
AxisView axis_view_fitted(const Tensor& big, const Tensor& small, int axis) {
  Shape shape = small.shape();
  shape[axis] = big.shape()[axis];
  return axis_view(shape, big.strides(), axis);
}

// Runs body(o, jb, je) over every outer position o and inner range [jb, je),
// splitting over outer positions when there are enough, over inner ones
// otherwise. Two calls never share an (o, j), so accumulating bodies do not race;
// `cost` is the work per (o, j).
template <class Body>
void for_outer_inner(int64_t outer, int64_t inner, int64_t cost, Body&& body) {
  if (outer >= inner) {
    parallel_for(outer, inner * cost, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) body(o, int64_t{0}, inner);
    });
  } else {
    for (int64_t o = 0; o < outer; ++o)
      parallel_for(inner, cost, [&](int64_t jb, int64_t je) { body(o, jb, je); });
  }
}

}  // namespace

void CpuBackend::index_select(const Tensor& x, int axis, const Tensor& ids, const Tensor& out) {
  if (out.numel() == 0) return;
  dispatch_all(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const AxisView xv = axis_view(x, axis), ov = axis_view(out, axis);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const int64_t* pid = ids.data<int64_t>();
    const int64_t sid = ids.strides()[0], n = ids.numel();
    const int64_t outer = static_cast<int64_t>(ov.outer.size()), inner = static_cast<int64_t>(ov.inner.size());
    const bool dense = xv.dense && ov.dense;
    // One task per picked slice (o, i): each writes its own output block.
    parallel_for(outer * n, inner, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) {
        const int64_t o = p / n, i = p % n;
        const T* src = px + xv.outer[o] + pid[i * sid] * xv.axis_stride;
        T* dst = po + ov.outer[o] + i * ov.axis_stride;
        if (dense) {
          std::copy(src, src + inner, dst);
        } else {
          for (int64_t j = 0; j < inner; ++j) dst[ov.inner[j]] = src[xv.inner[j]];
        }
      }
    });
  });
}

void CpuBackend::index_add(const Tensor& target, int axis, const Tensor& ids, const Tensor& src) {
  if (src.numel() == 0) return;
  dispatch_float(target.dtype(), "index_add", [&](auto zero) {
    using T = decltype(zero);
    const AxisView tv = axis_view(target, axis), sv = axis_view(src, axis);
    T* pt = target.data<T>();
    const T* ps = src.data<T>();
    const int64_t* pid = ids.data<int64_t>();
    const int64_t sid = ids.strides()[0], n = ids.numel();
    const int64_t outer = static_cast<int64_t>(sv.outer.size()), inner = static_cast<int64_t>(sv.inner.size());
    const bool dense = tv.dense && sv.dense;
    for_outer_inner(outer, inner, n, [&](int64_t o, int64_t jb, int64_t je) {
      for (int64_t i = 0; i < n; ++i) {
        T* dst = pt + tv.outer[o] + pid[i * sid] * tv.axis_stride;
        const T* s = ps + sv.outer[o] + i * sv.axis_stride;
        if (dense) {
          for (int64_t j = jb; j < je; ++j) dst[j] += s[j];
        } else {
          for (int64_t j = jb; j < je; ++j) dst[tv.inner[j]] += s[sv.inner[j]];
        }
      }
    });
  });
}

void CpuBackend::gather(const Tensor& x, int axis, const Tensor& ids, const Tensor& out) {
  if (out.numel() == 0) return;
  dispatch_all(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    const AxisView xv = axis_view_fitted(x, ids, axis), iv = axis_view(ids, axis), ov = axis_view(out, axis);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const int64_t* pid = ids.data<int64_t>();
    const int64_t n = out.shape()[axis], xs = xv.axis_stride;
    const int64_t outer = static_cast<int64_t>(ov.outer.size()), inner = static_cast<int64_t>(ov.inner.size());
    const bool dense = xv.dense && iv.dense && ov.dense;
    parallel_for(outer * n, inner, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e; ++p) {
        const int64_t o = p / n, i = p % n;
        const T* xrow = px + xv.outer[o];
        const int64_t* irow = pid + iv.outer[o] + i * iv.axis_stride;
        T* orow = po + ov.outer[o] + i * ov.axis_stride;
        if (dense) {
          for (int64_t j = 0; j < inner; ++j) orow[j] = xrow[irow[j] * xs + j];
        } else {
          for (int64_t j = 0; j < inner; ++j) orow[ov.inner[j]] = xrow[irow[iv.inner[j]] * xs + xv.inner[j]];
        }
      }
    });
  });
}

void CpuBackend::scatter_add(const Tensor& target, int axis, const Tensor& ids, const Tensor& src) {
  if (src.numel() == 0) return;
  dispatch_float(target.dtype(), "scatter_add", [&](auto zero) {
    using T = decltype(zero);
    const AxisView tv = axis_view_fitted(target, ids, axis), iv = axis_view(ids, axis), sv = axis_view(src, axis);
    T* pt = target.data<T>();
    const T* ps = src.data<T>();
    const int64_t* pid = ids.data<int64_t>();
    const int64_t n = src.shape()[axis], ts = tv.axis_stride;
    const int64_t outer = static_cast<int64_t>(sv.outer.size()), inner = static_cast<int64_t>(sv.inner.size());
    const bool dense = tv.dense && iv.dense && sv.dense;
    for_outer_inner(outer, inner, n, [&](int64_t o, int64_t jb, int64_t je) {
      T* trow = pt + tv.outer[o];
      for (int64_t i = 0; i < n; ++i) {
        const int64_t* irow = pid + iv.outer[o] + i * iv.axis_stride;
        const T* srow = ps + sv.outer[o] + i * sv.axis_stride;
        if (dense) {
          for (int64_t j = jb; j < je; ++j) trow[irow[j] * ts + j] += srow[j];
        } else {
          for (int64_t j = jb; j < je; ++j) trow[irow[iv.inner[j]] * ts + tv.inner[j]] += srow[sv.inner[j]];
        }
      }
    });
  });
}

}  // namespace loom
