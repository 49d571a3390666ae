// linalg.cpp: CPU matmul on Eigen's GEMM.
//
// Each matrix operand is mapped in place: a row-major matrix (unit column
// stride) or a column-major one (unit row stride: a transposed view). Either
// way Eigen reads it without a copy; only other layouts are copied first.
// A large product is cut into one block of output rows (or columns) per
// thread, each computed by single-threaded Eigen; many small ones (batched
// attention) are spread over threads one product each.
#include "engine/cpu/eigen.h"

#include <algorithm>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_clock.h"
#include "engine/cpu/loops.h"

namespace loom {

namespace {

template <class T>
using RowMajorMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0,
                               Eigen::OuterStride<>>;
template <class T>
using ColMajorMap = Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>, 0,
                               Eigen::OuterStride<>>;
template <class T>
using OutMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0,
                          Eigen::OuterStride<>>;

// Products of at least this many multiply-adds are split over the threads.
constexpr int64_t kLargeProduct = int64_t{1} << 22;
// Output rows/columns per split unit: whole AVX-512 vectors of floats.
constexpr int64_t kSplitAlign = 16;

enum class Layout { row_major, col_major, other };

// How the last two dims (rows, cols) of t are laid out.
Layout matrix_layout(const Tensor& t) {
  const int64_t rows = t.size(-2), cols = t.size(-1);
  const int64_t rs = t.strides()[t.dim() - 2], cs = t.strides()[t.dim() - 1];
  if ((cs == 1 || cols == 1) && (rs >= cols || rows == 1)) return Layout::row_major;
  if ((rs == 1 || rows == 1) && (cs >= rows || cols == 1)) return Layout::col_major;
  return Layout::other;
}

// Calls fn(matrix) with an Eigen map of the matrix at `ptr` (rows x cols).
template <class T, class Fn>
void with_matrix(const T* ptr, int64_t rows, int64_t cols, Layout layout, int64_t rs, int64_t cs, Fn&& fn) {
  if (layout == Layout::row_major) fn(RowMajorMap<T>(ptr, rows, cols, Eigen::OuterStride<>(std::max<int64_t>(rs, cols))));
  else fn(ColMajorMap<T>(ptr, rows, cols, Eigen::OuterStride<>(std::max<int64_t>(cs, rows))));
}

// out = a·b, or out += a·b when `accumulate`.
template <class T>
void matmul_typed(Tensor a, Tensor b, const Tensor& out, bool accumulate) {
  // Operands with a layout Eigen cannot map get copied to row-major first.
  if (matrix_layout(a) == Layout::other) a = dense(a);
  if (matrix_layout(b) == Layout::other) b = dense(b);
  const Layout la = matrix_layout(a), lb = matrix_layout(b);
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  const int nd = static_cast<int>(out.dim());
  const int64_t ars = a.strides()[nd - 2], acs = a.strides()[nd - 1];
  const int64_t brs = b.strides()[nd - 2], bcs = b.strides()[nd - 1];

  const Shape batch(out.shape().begin(), out.shape().end() - 2);
  const Strides a_bs(a.strides().begin(), a.strides().end() - 2);
  const Strides b_bs(b.strides().begin(), b.strides().end() - 2);
  const Strides o_bs(out.strides().begin(), out.strides().end() - 2);
  // Batch index -> element offsets of a, b and out.
  const int64_t n_batch = shape_numel(batch);
  auto offsets = [&](int64_t i) {
    std::array<int64_t, 3> off{0, 0, 0};
    for (size_t d = batch.size(); d-- > 0;) {
      const int64_t k = i % batch[d];
      i /= batch[d];
      off[0] += k * a_bs[d];
      off[1] += k * b_bs[d];
      off[2] += k * o_bs[d];
    }
    return off;
  };
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* po = out.data<T>();
  // out[r0:r1, c0:c1] of product i.
  auto block_product = [&](int64_t i, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    const auto off = offsets(i);
    OutMap<T> c(po + off[2] + r0 * N + c0, r1 - r0, c1 - c0, Eigen::OuterStride<>(N));
    if (K == 0) {
      if (!accumulate) c.setZero();
      return;
    }
    with_matrix(pa + off[0] + r0 * ars, r1 - r0, K, la, ars, acs, [&](const auto& A) {
      with_matrix(pb + off[1] + c0 * bcs, K, c1 - c0, lb, brs, bcs, [&](const auto& B) {
        if (accumulate) c.noalias() += A * B;
        else c.noalias() = A * B;
      });
    });
  };
  const int64_t flops_per_product = M * N * K;
  if (n_batch > 1 && flops_per_product < kLargeProduct) {
    // Many small products: one per thread at a time (Eigen stays single-threaded inside).
    cpu::parallel_for(n_batch, flops_per_product, [&](int64_t b0, int64_t b1) {
      for (int64_t i = b0; i < b1; ++i) block_product(i, 0, M, 0, N);
    });
    return;
  }
  if (flops_per_product < kLargeProduct) {
    // One small product (or none: a batch dim may be 0); Eigen threads it if that pays.
    for (int64_t i = 0; i < n_batch; ++i) block_product(i, 0, M, 0, N);
    return;
  }
  // Large products: each thread computes its own rows (or columns, when there are
  // more) with single-threaded Eigen (it does not thread inside a parallel region).
  // Unlike Eigen's own threaded GEMM, the threads never wait on each other while
  // packing, and each clears its own block of out (Eigen zero-fills before it
  // accumulates, unless accumulating is what was asked) instead of one thread
  // clearing all of it. On an idle machine
  // both reach about the same share of the FMA peak (Eigen's kernel is the
  // limit); when other processes take cores, Eigen's spinning threads lose far more.
  const bool split_rows = M >= N;
  const int64_t units = ((split_rows ? M : N) + kSplitAlign - 1) / kSplitAlign;
  const int64_t unit_flops = kSplitAlign * (split_rows ? N : M) * K;
  for (int64_t i = 0; i < n_batch; ++i) {
    cpu::parallel_for(units, unit_flops, [&](int64_t u0, int64_t u1) {
      const int64_t lo = u0 * kSplitAlign;
      if (split_rows) block_product(i, lo, std::min(u1 * kSplitAlign, M), 0, N);
      else block_product(i, 0, M, lo, std::min(u1 * kSplitAlign, N));
    });
  }
}

}  // namespace

void CpuBackend::matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
  const TimedKernel timed(KernelKind::gemm);
  dispatch_float(out.dtype(), "matmul", [&](auto zero) {
    using T = decltype(zero);
    matmul_typed<T>(a, b, out, false);
  });
}

void CpuBackend::matmul_add(const Tensor& a, const Tensor& b, const Tensor& out) {
  const TimedKernel timed(KernelKind::gemm);
  dispatch_float(out.dtype(), "matmul_add", [&](auto zero) {
    using T = decltype(zero);
    matmul_typed<T>(a, b, out, true);
  });
}

}  // namespace loom
