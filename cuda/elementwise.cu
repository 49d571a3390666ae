// elementwise.cu: CUDA kernels for fill, copy, unary, binary and where.
//
// One grid-stride kernel (layout.cuh) serves them all; each op is a small
// "body" struct that reads its operands at the offsets the layout computes.
// The math comes from engine/elementwise_functors.h, the same functors the CPU
// loops use, so both devices evaluate the same expression.
#include "cuda/cuda_backend.h"
#include "cuda/layout.cuh"
#include "engine/elementwise_functors.h"

namespace loom::cuda {

namespace {

template <class T>
struct FillBody {
  T* out;
  T value;
  __device__ void operator()(const int64_t (&off)[1]) const { out[off[0]] = value; }
};

template <class D, class S>
struct CopyBody {
  D* out;
  const S* x;
  __device__ void operator()(const int64_t (&off)[2]) const { out[off[0]] = static_cast<D>(x[off[1]]); }
};

template <class T, class F>
struct UnaryBody {
  T* out;
  const T* x;
  T param;
  F f;
  __device__ void operator()(const int64_t (&off)[2]) const { out[off[0]] = f(x[off[1]], param); }
};

template <class T, class F>
struct BinaryBody {
  T* out;
  const T* a;
  const T* b;
  F f;
  __device__ void operator()(const int64_t (&off)[3]) const { out[off[0]] = f(a[off[1]], b[off[2]]); }
};

template <class C, class T>
struct WhereBody {
  T* out;
  const C* cond;
  const T* a;
  const T* b;
  __device__ void operator()(const int64_t (&off)[4]) const {
    out[off[0]] = cond[off[1]] != C(0) ? a[off[2]] : b[off[3]];
  }
};

}  // namespace

void CudaBackend::fill(const Tensor& out, double value) {
  dispatch_all(out.dtype(), [&](auto zero) {
    using T = decltype(zero);
    launch_elementwise<1>("fill", out.shape(), {&out.strides()}, FillBody<T>{out.data<T>(), static_cast<T>(value)});
  });
}

void CudaBackend::copy(const Tensor& src, const Tensor& dst) {
  dispatch_all(dst.dtype(), [&](auto dst_zero) {
    using D = decltype(dst_zero);
    dispatch_all(src.dtype(), [&](auto src_zero) {
      using S = decltype(src_zero);
      launch_elementwise<2>("copy", dst.shape(), {&dst.strides(), &src.strides()},
                            CopyBody<D, S>{dst.data<D>(), src.data<S>()});
    });
  });
}

void CudaBackend::unary(UnaryOp op, const Tensor& x, const Tensor& out, double param) {
  const char* name = unary_op_name(op);
  dispatch_float(out.dtype(), name, [&](auto zero) {
    using T = decltype(zero);
    visit_unary(op, [&](auto f) {
      using F = decltype(f);
      launch_elementwise<2>(name, out.shape(), {&out.strides(), &x.strides()},
                            UnaryBody<T, F>{out.data<T>(), x.data<T>(), static_cast<T>(param), f});
    });
  });
}

void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const char* name = binary_op_name(op);
  dispatch_float(out.dtype(), name, [&](auto zero) {
    using T = decltype(zero);
    visit_binary(op, [&](auto f) {
      using F = decltype(f);
      launch_elementwise<3>(name, out.shape(), {&out.strides(), &a.strides(), &b.strides()},
                            BinaryBody<T, F>{out.data<T>(), a.data<T>(), b.data<T>(), f});
    });
  });
}

void CudaBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(cond.dtype(), [&](auto cond_zero) {
    using C = decltype(cond_zero);
    dispatch_float(out.dtype(), "where", [&](auto zero) {
      using T = decltype(zero);
      launch_elementwise<4>("where", out.shape(), {&out.strides(), &cond.strides(), &a.strides(), &b.strides()},
                            WhereBody<C, T>{out.data<T>(), cond.data<C>(), a.data<T>(), b.data<T>()});
    });
  });
}

}  // namespace loom::cuda
