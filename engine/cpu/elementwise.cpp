// elementwise.cpp: CPU loops for fill, copy, unary, binary and where.
//
// Every kernel has a contiguous fast path (plain indexed loops the compiler
// vectorises) and one general path over StridedRows for views and broadcasts.
#include <algorithm>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"
#include "engine/elementwise_functors.h"

namespace loom {

using cpu::parallel_for;
using cpu::StridedRows;

void CpuBackend::fill(const Tensor& out, double value) {
  dispatch_all(out.dtype(), [&](auto zero) {
    using T = decltype(zero);
    T* o = out.data<T>();
    const T v = static_cast<T>(value);
    if (out.is_contiguous()) {
      parallel_for(out.numel(), 1, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) o[i] = v;
      });
      return;
    }
    StridedRows<1> it(out.shape(), {out.strides()});
    const int64_t n = it.inner(), so = it.inner_stride(0);
    parallel_for(it.rows(), n, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        T* row = o + it.row_offsets(r)[0];
        for (int64_t i = 0; i < n; ++i) row[i * so] = v;
      }
    });
  });
}

void CpuBackend::copy(const Tensor& src, const Tensor& dst) {
  dispatch_all(dst.dtype(), [&](auto dst_zero) {
    using D = decltype(dst_zero);
    dispatch_all(src.dtype(), [&](auto src_zero) {
      using S = decltype(src_zero);
      D* o = dst.data<D>();
      const S* x = src.data<S>();
      if (src.is_contiguous() && dst.is_contiguous()) {
        parallel_for(dst.numel(), 1, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) o[i] = static_cast<D>(x[i]);
        });
        return;
      }
      StridedRows<2> it(dst.shape(), {dst.strides(), src.strides()});
      const int64_t n = it.inner(), so = it.inner_stride(0), sx = it.inner_stride(1);
      parallel_for(it.rows(), n, [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const auto off = it.row_offsets(r);
          D* orow = o + off[0];
          const S* xrow = x + off[1];
          for (int64_t i = 0; i < n; ++i) orow[i * so] = static_cast<D>(xrow[i * sx]);
        }
      });
    });
  });
}

void CpuBackend::unary(UnaryOp op, const Tensor& x, const Tensor& out, double param) {
  dispatch_float(out.dtype(), unary_op_name(op), [&](auto zero) {
    using T = decltype(zero);
    visit_unary(op, [&](auto f) {
      T* o = out.data<T>();
      const T* in = x.data<T>();
      const T p = static_cast<T>(param);
      if (x.is_contiguous() && out.is_contiguous()) {
        parallel_for(out.numel(), 4, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) o[i] = f(in[i], p);
        });
        return;
      }
      StridedRows<2> it(out.shape(), {out.strides(), x.strides()});
      const int64_t n = it.inner(), so = it.inner_stride(0), sx = it.inner_stride(1);
      parallel_for(it.rows(), n * 4, [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; ++r) {
          const auto off = it.row_offsets(r);
          for (int64_t i = 0; i < n; ++i) o[off[0] + i * so] = f(in[off[1] + i * sx], p);
        }
      });
    });
  });
}

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_float(out.dtype(), binary_op_name(op), [&](auto zero) {
    using T = decltype(zero);
    visit_binary(op, [&](auto f) {
      T* o = out.data<T>();
      const T* pa = a.data<T>();
      const T* pb = b.data<T>();
      const int64_t n = out.numel();
      const bool a_contig = a.is_contiguous(), b_contig = b.is_contiguous();
      const bool b_scalar = b.numel() == 1 || std::all_of(b.strides().begin(), b.strides().end(),
                                                          [](int64_t s) { return s == 0; });
      if (out.is_contiguous() && a_contig && b_contig) {
        parallel_for(n, 1, [&](int64_t lo, int64_t hi) {
          for (int64_t i = lo; i < hi; ++i) o[i] = f(pa[i], pb[i]);
        });
        return;
      }
      if (out.is_contiguous() && a_contig && b_scalar) {
        const T s = pb[0];
        parallel_for(n, 1, [&](int64_t lo, int64_t hi) {
          for (int64_t i = lo; i < hi; ++i) o[i] = f(pa[i], s);
        });
        return;
      }
      StridedRows<3> it(out.shape(), {out.strides(), a.strides(), b.strides()});
      const int64_t m = it.inner(), so = it.inner_stride(0), sa = it.inner_stride(1), sb = it.inner_stride(2);
      parallel_for(it.rows(), m, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          const auto off = it.row_offsets(r);
          T* orow = o + off[0];
          const T* arow = pa + off[1];
          const T* brow = pb + off[2];
          if (so == 1 && sa == 1 && sb == 1) {
            for (int64_t i = 0; i < m; ++i) orow[i] = f(arow[i], brow[i]);
          } else if (so == 1 && sa == 1 && sb == 0) {
            const T s = brow[0];
            for (int64_t i = 0; i < m; ++i) orow[i] = f(arow[i], s);
          } else if (so == 1 && sa == 0 && sb == 1) {
            const T s = arow[0];
            for (int64_t i = 0; i < m; ++i) orow[i] = f(s, brow[i]);
          } else {
            for (int64_t i = 0; i < m; ++i) orow[i * so] = f(arow[i * sa], brow[i * sb]);
          }
        }
      });
    });
  });
}

void CpuBackend::where(const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_all(cond.dtype(), [&](auto cond_zero) {
    using C = decltype(cond_zero);
    dispatch_float(out.dtype(), "where", [&](auto zero) {
      using T = decltype(zero);
      const C* pc = cond.data<C>();
      const T* pa = a.data<T>();
      const T* pb = b.data<T>();
      T* o = out.data<T>();
      StridedRows<4> it(out.shape(), {out.strides(), cond.strides(), a.strides(), b.strides()});
      const int64_t m = it.inner();
      const int64_t so = it.inner_stride(0), sc = it.inner_stride(1), sa = it.inner_stride(2),
                    sb = it.inner_stride(3);
      parallel_for(it.rows(), m, [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          const auto off = it.row_offsets(r);
          for (int64_t i = 0; i < m; ++i)
            o[off[0] + i * so] = pc[off[1] + i * sc] != C(0) ? pa[off[2] + i * sa] : pb[off[3] + i * sb];
        }
      });
    });
  });
}

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace loom
