// linalg.cpp: CPU matmul on Eigen's GEMM.
//
// Each matrix operand is mapped in place: a row-major matrix (unit column
// stride) or a column-major one (unit row stride: a transposed view). Either
// way Eigen reads it without a copy; only other layouts are copied first.
// A large product is cut into one block of output rows (or columns) per
// thread, each computed by single-threaded Eigen; many small ones (batched
// attention) are spread over threads one product each.
//
// matmul_packed serves a weight multiplied at every token step (the feedback
// transformer): the weight is packed for Eigen's GEMM kernel once, not once per
// product (see "products by a packed matrix" below).
#include "engine/cpu/eigen.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/device.h"
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

// ---- products by a packed matrix ----------------------------------------------------------
//
// out [M, N] = a [M, K] · b [K, N] for one b and many a. In Eigen's column-major
// terms this is outᵀ = bᵀ · aᵀ, and Eigen's GEMM packs its left operand, bᵀ, into
// blocks of mc rows × kc depth (micro-panels of mr rows, the order its kernel gebp
// reads) before every product: for a weight multiplied at each token step that is a
// pass over the whole weight per step. Here bᵀ is packed into all its blocks once;
// a product packs only aᵀ (one step's rows, small) and runs gebp over the stored
// blocks. A block of rows of bᵀ is a block of columns of out, so threads take whole
// blocks and never share an output element. Eigen's internal GEMM pieces are the
// ones its own product uses (Eigen/src/Core/products/GeneralMatrixMatrix.h).

namespace gemm = Eigen::internal;
using Index = Eigen::Index;

template <class T>
using AlignedVector = std::vector<T, Eigen::aligned_allocator<T>>;

// Block starts are rounded up to this many elements: gebp reads the panels with
// aligned vector loads.
template <class T>
constexpr int64_t kPanelAlign = EIGEN_MAX_ALIGN_BYTES / sizeof(T);

int64_t round_up(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

template <class T>
struct EigenPackedMatrix final : PackedMatrix {
  int64_t K = 0, N = 0;   // b's shape
  int64_t kc = 1, mc = 1;  // block depth, block rows (of bᵀ)
  AlignedVector<T> panels;
  std::vector<int64_t> offsets;  // block (row block r, depth block d) starts at offsets[r·depth_blocks + d]

  int64_t depth_blocks() const { return (K + kc - 1) / kc; }
  int64_t row_blocks() const { return (N + mc - 1) / mc; }
  int64_t depth_of(int64_t d) const { return std::min(kc, K - d * kc); }
  int64_t rows_of(int64_t r) const { return std::min(mc, N - r * mc); }
  const T* block(int64_t r, int64_t d) const { return panels.data() + offsets[r * depth_blocks() + d]; }
};

// Packs bᵀ [N, K], stored in `Order` with outer stride `stride`.
template <class T, int Order>
std::shared_ptr<const PackedMatrix> pack_left_operand(const T* ptr, int64_t stride, int64_t K, int64_t N) {
  using Traits = gemm::gebp_traits<T, T>;
  using Mapper = gemm::const_blas_data_mapper<T, Index, Order>;
  gemm::gemm_pack_lhs<T, Index, Mapper, Traits::mr, Traits::LhsProgress, typename Traits::LhsPacket4Packing, Order>
      pack;
  auto p = std::make_shared<EigenPackedMatrix<T>>();
  p->K = K;
  p->N = N;
  // Eigen's own cache blocking for this shape, with blocks small enough that every
  // thread gets at least two.
  Index kc = K, mc = N, nc = N;
  if (K > 0 && N > 0) gemm::computeProductBlockingSizes<T, T>(kc, mc, nc, Index{1});  // it divides by them
  const int64_t shared_rows = round_up((N + 2 * num_threads() - 1) / (2 * num_threads()), Traits::mr);
  p->kc = std::max<int64_t>(kc, 1);
  p->mc = std::max<int64_t>(std::min<int64_t>(mc, shared_rows), 1);
  int64_t size = 0;
  for (int64_t r = 0; r < p->row_blocks(); ++r)
    for (int64_t d = 0; d < p->depth_blocks(); ++d) {
      p->offsets.push_back(size);
      size += round_up(p->rows_of(r) * p->depth_of(d), kPanelAlign<T>);
    }
  p->panels.resize(static_cast<size_t>(size));
  const Mapper source(ptr, stride);
  for (int64_t r = 0; r < p->row_blocks(); ++r)
    for (int64_t d = 0; d < p->depth_blocks(); ++d)
      pack(p->panels.data() + p->offsets[r * p->depth_blocks() + d], source.getSubMapper(r * p->mc, d * p->kc),
           p->depth_of(d), p->rows_of(r));
  return p;
}

template <class T>
std::shared_ptr<const PackedMatrix> pack_typed(Tensor b) {
  if (matrix_layout(b) == Layout::other) b = dense(b);
  const int64_t K = b.size(0), N = b.size(1);
  const int64_t rs = b.strides()[0], cs = b.strides()[1];
  // b row-major: bᵀ(n, k) = b(k, n) sits at n + k·rs, column-major storage of bᵀ.
  if (matrix_layout(b) == Layout::row_major)
    return pack_left_operand<T, Eigen::ColMajor>(b.data<T>(), std::max<int64_t>(rs, N), K, N);
  return pack_left_operand<T, Eigen::RowMajor>(b.data<T>(), std::max<int64_t>(cs, K), K, N);
}

template <class T>
void matmul_packed_typed(Tensor a, const EigenPackedMatrix<T>& p, const Tensor& out, bool accumulate) {
  using Traits = gemm::gebp_traits<T, T>;
  using RhsMapper = gemm::const_blas_data_mapper<T, Index, Eigen::ColMajor>;
  using ResMapper = gemm::blas_data_mapper<T, Index, Eigen::ColMajor, Eigen::Unaligned, 1>;
  gemm::gemm_pack_rhs<T, Index, RhsMapper, Traits::nr, Eigen::ColMajor> pack_rhs;
  gemm::gebp_kernel<T, T, Index, ResMapper, Traits::mr, Traits::nr, false, false> gebp;

  if (matrix_layout(a) != Layout::row_major) a = dense(a);
  const int64_t M = a.size(0), K = p.K, N = p.N;
  if (M == 0 || N == 0) return;
  // aᵀ [K, M]: aᵀ(k, m) = a(m, k) sits at k + m·lda, column-major. Packed by depth
  // block: block d holds depth_of(d) × M elements.
  const int64_t lda = std::max<int64_t>(a.strides()[0], K);
  const RhsMapper a_t(a.data<T>(), lda);
  std::vector<int64_t> rhs_offsets;
  int64_t size = 0;
  for (int64_t d = 0; d < p.depth_blocks(); ++d) {
    rhs_offsets.push_back(size);
    size += round_up(p.depth_of(d) * M, kPanelAlign<T>);
  }
  AlignedVector<T> rhs(static_cast<size_t>(size));
  for (int64_t d = 0; d < p.depth_blocks(); ++d)
    pack_rhs(rhs.data() + rhs_offsets[d], a_t.getSubMapper(d * p.kc, 0), p.depth_of(d), M);

  T* po = out.data<T>();
  const ResMapper out_t(po, N);  // outᵀ [N, M], column-major
  cpu::parallel_for(p.row_blocks(), p.mc * std::max<int64_t>(K, 1) * M, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n0 = r * p.mc, rows = p.rows_of(r);
      if (!accumulate)  // gebp adds to its output
        for (int64_t m = 0; m < M; ++m) std::fill(po + m * N + n0, po + m * N + n0 + rows, T(0));
      for (int64_t d = 0; d < p.depth_blocks(); ++d)
        gebp(out_t.getSubMapper(n0, 0), p.block(r, d), rhs.data() + rhs_offsets[d], rows, p.depth_of(d), M, T(1));
    }
  });
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

void CpuBackend::pack_matmul_operand(const Tensor& b, std::shared_ptr<const PackedMatrix>& packed) {
  const TimedKernel timed(KernelKind::gemm);
  packed = dispatch_float(b.dtype(), "pack_matmul_operand", [&](auto zero) {
    using T = decltype(zero);
    return pack_typed<T>(b);
  });
}

void CpuBackend::matmul_packed(const Tensor& a, const Tensor& b, const PackedMatrix* packed, const Tensor& out,
                               bool accumulate) {
  const TimedKernel timed(KernelKind::gemm);
  dispatch_float(out.dtype(), "matmul_packed", [&](auto zero) {
    using T = decltype(zero);
    const auto* p = dynamic_cast<const EigenPackedMatrix<T>*>(packed);
    if (p && p->K == b.size(0) && p->N == b.size(1)) matmul_packed_typed<T>(a, *p, out, accumulate);
    else matmul_typed<T>(a, b, out, accumulate);
  });
}

}  // namespace loom
