// linalg.cpp: CPU matmul on Eigen's GEMM or OpenBLAS's (engine/gemm_library.h
// says which and why).
//
// Each matrix operand is used in place: a row-major matrix (unit column
// stride) or a column-major one (unit row stride: a transposed view). Either
// way both libraries read it without a copy; only other layouts are copied first.
// A large product is cut into blocks of output rows (or columns) that the
// threads share, each computed by one single-threaded library call; many small
// ones (batched attention) are spread over threads one product each.
#include "engine/cpu/eigen.h"

#include <algorithm>
#include <climits>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/gemm_call.h"
#include "engine/cpu/panel_matmul.h"
#include "engine/gemm_library.h"
#include "engine/kernel_clock.h"
#include "engine/cpu/loops.h"

#ifdef LOOM_OPENBLAS
#include <cblas.h>
#endif

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

// Products of at least this many multiply-adds are cut into blocks for the threads.
constexpr int64_t kLargeProduct = int64_t{1} << 22;
// The blocks depend on the product's shape alone, never on the thread count,
// and each is one library call: both libraries' result for an element depends
// on the call's shape and where it starts (OpenBLAS's kernels treat the rows
// past a multiple of their tile apart; Eigen sizes its blocks of the inner
// dimension from the call's shape), so blocks cut per thread would give other
// bits on another thread count. At most
// kMaxBlocks blocks, which 1, 2, 4 and 8 threads share evenly; at least
// kMinBlock rows or columns each, since every call packs the other operand
// again (blocks of 512 rows cost 2-4 % against one call, of 128 rows 5-15 %,
// for OpenBLAS at the transformers' shapes). Block edges fall on whole
// AVX-512 vectors of floats (kSplitAlign).
constexpr int64_t kMaxBlocks = 8;
constexpr int64_t kMinBlock = 256;
constexpr int64_t kSplitAlign = 16;

// Rows (or columns) per block when `length` of them are cut.
int64_t block_length(int64_t length) {
  const int64_t even = (length + kMaxBlocks - 1) / kMaxBlocks;
  return std::max(kMinBlock, (even + kSplitAlign - 1) / kSplitAlign * kSplitAlign);
}

enum class Layout { row_major, col_major, other };

// How the last two dims (rows, cols) of t are laid out.
Layout matrix_layout(const Tensor& t) {
  const int64_t rows = t.size(-2), cols = t.size(-1);
  const int64_t rs = t.strides()[t.dim() - 2], cs = t.strides()[t.dim() - 1];
  if ((cs == 1 || cols == 1) && (rs >= cols || rows == 1)) return Layout::row_major;
  if ((rs == 1 || rows == 1) && (cs >= rows || cols == 1)) return Layout::col_major;
  return Layout::other;
}

// Calls fn(matrix) with an Eigen map of the matrix m.
template <class T, class Fn>
void with_matrix(const cpu::MatrixIn<T>& m, Fn&& fn) {
  if (m.row_major) fn(RowMajorMap<T>(m.data, m.rows, m.cols, Eigen::OuterStride<>(std::max(m.leading, m.cols))));
  else fn(ColMajorMap<T>(m.data, m.rows, m.cols, Eigen::OuterStride<>(std::max(m.leading, m.rows))));
}

#ifdef LOOM_OPENBLAS
// An operand as BLAS takes it: a row-major matrix, or the transpose of one
// (a column-major matrix is its transpose stored row-major), with its leading
// dimension (at least the row length, as BLAS demands even of a one-row matrix).
struct BlasOperand {
  CBLAS_TRANSPOSE transpose;
  int64_t leading;
};
template <class T>
BlasOperand blas_operand(const cpu::MatrixIn<T>& m) {
  if (m.row_major) return {CblasNoTrans, std::max<int64_t>({m.leading, m.cols, 1})};
  return {CblasTrans, std::max<int64_t>({m.leading, m.rows, 1})};
}

void blas_gemm(const BlasOperand& a, const BlasOperand& b, int64_t M, int64_t N, int64_t K, const float* pa,
               const float* pb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, a.transpose, b.transpose, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K),
              1.0f, pa, static_cast<int>(a.leading), pb, static_cast<int>(b.leading), beta, c, static_cast<int>(ldc));
}
void blas_gemm(const BlasOperand& a, const BlasOperand& b, int64_t M, int64_t N, int64_t K, const double* pa,
               const double* pb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, a.transpose, b.transpose, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K),
              1.0, pa, static_cast<int>(a.leading), pb, static_cast<int>(b.leading), beta, c, static_cast<int>(ldc));
}
#endif

}  // namespace

template <class T>
void cpu::gemm_call(const MatrixIn<T>& a, const MatrixIn<T>& b, T* out, int64_t ldo, bool accumulate) {
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  OutMap<T> c(out, M, N, Eigen::OuterStride<>(ldo));
  if (K == 0) {
    if (!accumulate) c.setZero();
    return;
  }
#ifdef LOOM_OPENBLAS
  // BLAS takes int sizes; a larger product (never met in practice) stays with Eigen.
  const BlasOperand a_blas = blas_operand(a), b_blas = blas_operand(b);
  if (cpu_gemm_library() == GemmLibrary::openblas &&
      std::max({M, N, K, a_blas.leading, b_blas.leading, ldo}) <= INT_MAX) {
    blas_gemm(a_blas, b_blas, M, N, K, a.data, b.data, accumulate ? T(1) : T(0), out, ldo);
    return;
  }
#endif
  with_matrix(a, [&](const auto& A) {
    with_matrix(b, [&](const auto& B) {
      if (accumulate) c.noalias() += A * B;
      else c.noalias() = A * B;
    });
  });
}
template void cpu::gemm_call(const MatrixIn<float>&, const MatrixIn<float>&, float*, int64_t, bool);
template void cpu::gemm_call(const MatrixIn<double>&, const MatrixIn<double>&, double*, int64_t, bool);

namespace {

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
  // out[r0:r1, c0:c1] of product i. A matrix of either layout is read in place:
  // its leading dimension is the stride between its rows (row-major) or columns.
  auto block_product = [&](int64_t i, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    const auto off = offsets(i);
    const cpu::MatrixIn<T> a_block{pa + off[0] + r0 * ars, r1 - r0, K, la == Layout::row_major,
                                   la == Layout::row_major ? ars : acs};
    const cpu::MatrixIn<T> b_block{pb + off[1] + c0 * bcs, K, c1 - c0, lb == Layout::row_major,
                                   lb == Layout::row_major ? brs : bcs};
    cpu::gemm_call(a_block, b_block, po + off[2] + r0 * N + c0, N, accumulate);
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
    // One small product (or none: a batch dim may be 0), one call.
    for (int64_t i = 0; i < n_batch; ++i) block_product(i, 0, M, 0, N);
    return;
  }
  // Large products: blocks of output rows (or columns, when there are more),
  // each one single-threaded library call (neither library threads inside a
  // parallel region), shared by the threads. Unlike Eigen's own threaded GEMM,
  // the threads never wait on each other while packing, and each clears its own
  // blocks of out instead of one thread clearing all of it. When other processes
  // take cores, Eigen's spinning threads would lose far more.
  const bool split_rows = M >= N;
  const int64_t length = split_rows ? M : N, block = block_length(length);
  const int64_t blocks = (length + block - 1) / block;
  const int64_t block_flops = block * (split_rows ? N : M) * K;
  for (int64_t i = 0; i < n_batch; ++i) {
    cpu::parallel_for(blocks, block_flops, [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {  // one call per block, whoever computes it
        const int64_t lo = u * block, hi = std::min(lo + block, length);
        if (split_rows) block_product(i, lo, hi, 0, N);
        else block_product(i, 0, M, lo, hi);
      }
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

// ---- products with a packed weight (engine/cpu/panel_matmul.h) -------------------

namespace {

// A 2-D tensor as the panel kernels read it: in place when row- or column-major,
// else a row-major copy (kept alive in `keep`).
template <class T>
cpu::MatrixIn<T> matrix_in(const Tensor& t, Tensor& keep) {
  keep = matrix_layout(t) == Layout::other ? dense(t) : t;
  const bool row_major = matrix_layout(keep) != Layout::col_major;
  const int64_t rows = keep.size(0), cols = keep.size(1);
  const int64_t leading = row_major ? std::max<int64_t>(keep.strides()[0], cols) : std::max<int64_t>(keep.strides()[1], rows);
  return {keep.data<T>(), rows, cols, row_major, leading};
}

}  // namespace

int64_t CpuBackend::panel_width(DType dtype) const {
  if (dtype == DType::f32) return cpu::panel_width<float>();
  if (dtype == DType::f64) return cpu::panel_width<double>();
  return 0;
}

void CpuBackend::pack_panels(const Tensor& w, const Tensor& panels) {
  const TimedKernel timed(KernelKind::gemm);
  dispatch_float(w.dtype(), "pack_panels", [&](auto zero) {
    using T = decltype(zero);
    Tensor keep;
    const cpu::MatrixIn<T> in = matrix_in<T>(w, keep);
    T* out = panels.data<T>();
    cpu::parallel_for(cpu::panel_count<T>(in.cols), in.rows * cpu::panel_width<T>(),
                      [&](int64_t p0, int64_t p1) { cpu::pack_panels(in, out, p0, p1); });
  });
}

void CpuBackend::matmul_panels(const Tensor& a, const Tensor& panels, const Tensor& out, bool accumulate) {
  const TimedKernel timed(KernelKind::gemm);
  dispatch_float(out.dtype(), "matmul_panels", [&](auto zero) {
    using T = decltype(zero);
    Tensor keep;
    const cpu::MatrixIn<T> in = matrix_in<T>(a, keep);
    const int64_t N = out.size(1);
    const T* packed = panels.data<T>();
    T* o = out.data<T>();
    cpu::parallel_for(cpu::panel_count<T>(N), in.rows * in.cols * cpu::panel_width<T>(), [&](int64_t p0, int64_t p1) {
      cpu::panel_matmul(in, packed, N, o, N, accumulate, p0, p1);
    });
  });
}

}  // namespace loom
