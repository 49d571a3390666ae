// index.cu: CUDA kernels for index_select, index_add, gather and scatter_add.
//
// Each is one elementwise pass (layout.cuh) over the tensor that has one element
// per picked item: out for the selects, src for the adds. The trick is in the
// strides: the indexed tensor is walked with stride 0 along the axis (so its
// offset covers every other dim) and the ids with their own stride along the
// axis only (index_select, index_add: 1-D ids) or all their strides (gather,
// scatter_add: ids shaped like out / src). The kernel then adds
// ids[...] * (the axis stride) to the indexed tensor's offset. Any layout of any
// operand is walked in place, as on the CPU (engine/cpu/index.cpp).
//
// The ids are range-checked by the ops before a kernel runs.
//
// index_add and scatter_add may hit one target slot many times (repeated ids):
// they use atomicAdd, so duplicates accumulate in whatever order the threads
// arrive. Float sums of duplicates may therefore differ in the last bits from
// run to run and from the CPU (which adds in id order); without duplicates
// (the usual case for index_select's gradient, not for embedding's) every slot
// gets one addition and the result is exact.
#include "cuda/cuda_backend.h"
#include "cuda/layout.cuh"

namespace loom::cuda {

namespace {

// out[off0] = x[off1 + ids[off2] * axis_stride]  (index_select: operands out, x, ids)
// out[off0] = x[off2 + ids[off1] * axis_stride]  (gather:       operands out, ids, x)
template <class T, bool kGather>
struct PickBody {
  T* out;
  const T* x;
  const int64_t* ids;
  int64_t axis_stride;
  __device__ void operator()(const int64_t (&off)[3]) const {
    const int64_t x_off = kGather ? off[2] : off[1], id_off = kGather ? off[1] : off[2];
    out[off[0]] = x[x_off + ids[id_off] * axis_stride];
  }
};

// target[off0 + ids[off2] * axis_stride] += src[off1]  (index_add:   target, src, ids)
// target[off0 + ids[off1] * axis_stride] += src[off2]  (scatter_add: target, ids, src)
template <class T, bool kScatter>
struct AddBody {
  T* target;
  const T* src;
  const int64_t* ids;
  int64_t axis_stride;
  __device__ void operator()(const int64_t (&off)[3]) const {
    const int64_t src_off = kScatter ? off[2] : off[1], id_off = kScatter ? off[1] : off[2];
    atomicAdd(target + off[0] + ids[id_off] * axis_stride, src[src_off]);
  }
};

// t's strides with the indexed axis set to 0: the offset of everything but the axis.
Strides without_axis(const Tensor& t, int axis) {
  Strides s = t.strides();
  s[axis] = 0;
  return s;
}

// Strides of 1-D ids laid along `axis` of an `ndim`-axis walk.
Strides ids_along(const Tensor& ids, int axis, int64_t ndim) {
  Strides s(ndim, 0);
  s[axis] = ids.strides()[0];
  return s;
}

}  // namespace

void CudaBackend::index_select(const Tensor& x, int axis, const Tensor& ids, const Tensor& out) {
  if (out.numel() == 0) return;
  const Strides xs = without_axis(x, axis), is = ids_along(ids, axis, out.dim());
  dispatch_all(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    launch_elementwise<3>("index_select", out.shape(), {&out.strides(), &xs, &is},
                          PickBody<T, false>{out.data<T>(), x.data<T>(), ids.data<int64_t>(), x.strides()[axis]});
  });
}

void CudaBackend::index_add(const Tensor& target, int axis, const Tensor& ids, const Tensor& src) {
  if (src.numel() == 0) return;
  const Strides ts = without_axis(target, axis), is = ids_along(ids, axis, src.dim());
  dispatch_float(target.dtype(), "index_add", [&](auto zero) {
    using T = decltype(zero);
    launch_elementwise<3>("index_add", src.shape(), {&ts, &src.strides(), &is},
                          AddBody<T, false>{target.data<T>(), src.data<T>(), ids.data<int64_t>(),
                                            target.strides()[axis]});
  });
}

void CudaBackend::gather(const Tensor& x, int axis, const Tensor& ids, const Tensor& out) {
  if (out.numel() == 0) return;
  const Strides xs = without_axis(x, axis);
  dispatch_all(x.dtype(), [&](auto zero) {
    using T = decltype(zero);
    launch_elementwise<3>("gather", out.shape(), {&out.strides(), &ids.strides(), &xs},
                          PickBody<T, true>{out.data<T>(), x.data<T>(), ids.data<int64_t>(), x.strides()[axis]});
  });
}

void CudaBackend::scatter_add(const Tensor& target, int axis, const Tensor& ids, const Tensor& src) {
  if (src.numel() == 0) return;
  // Walked over src, whose positions ids must all cover (the CPU reads ids there too).
  LOOM_CHECK(ids.shape() == src.shape(), "scatter_add on cuda: ids ", shape_str(ids.shape()),
             " and src ", shape_str(src.shape()), " must have the same shape");
  const Strides ts = without_axis(target, axis);
  dispatch_float(target.dtype(), "scatter_add", [&](auto zero) {
    using T = decltype(zero);
    launch_elementwise<3>("scatter_add", src.shape(), {&ts, &ids.strides(), &src.strides()},
                          AddBody<T, true>{target.data<T>(), src.data<T>(), ids.data<int64_t>(),
                                           target.strides()[axis]});
  });
}

}  // namespace loom::cuda
