// panel_matmul.h: products with a weight packed once and read by many calls, for
// the steps of a recurrence (stepped_matmul, engine/ops.h, and the fused LSTM's
// steps, cpu/lstm.cpp): out = a·W with a of a few dozen rows, W [K, N] the same
// for every step.
//
// A GEMM library packs W into its kernel's layout at every call. At a step's
// shape ([64, 512] · [512, 2048] in feedback.json) that packing is a large part
// of the product: a profile of a feedback training step put 18 % of it in
// OpenBLAS's packing of the weights, beside 36 % in its kernel for all of the
// step's products (engine/README.md). Here W is packed once,
// into panels of kPanelVectors vectors' worth of columns:
//
//   panels[p][k][j] = W[k, p·P + j]   (P = kPanelVectors · lanes; 0 past column N)
//
// so each panel is one contiguous stream of K rows of P entries. The product
// walks the panels; within one, a tile of rows of out (MR rows × P columns) stays
// in registers while the depth is walked (small_products.h's matmul_tile, which
// reads a's rows in place), in blocks of kDepthBlock that keep the panel's part in
// L1 while every tile of rows reads it.
//
// Each column of out belongs to one panel, and a panel's sums run the same way
// whoever computes it and however many threads share the panels: the result does
// not depend on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "engine/cpu/gemm_call.h"
#include "engine/cpu/small_products.h"

namespace loom::cpu {

// Vectors per panel row: 2, so that a tile of MR rows keeps 2·MR accumulators.
constexpr int kPanelVectors = 2;
// Rows per register tile: 8 × 2 accumulators with AVX-512's 32 registers, 6 × 2
// with 16 (as small_matmul's tiles there). Timings in engine/README.md.
constexpr int kPanelRows = kVectorRegisters >= 32 ? 8 : 6;
// Depth per block: 256 rows of a panel, 32 KB of floats with AVX-512.
constexpr int64_t kDepthBlock = 256;
// Panel rows prefetched ahead of the one each depth step reads: the panels of
// the steps' weights come from memory (feedback.json's are 65 MB). A scratch
// program streaming 16 weights of [512, 2048] through 64-row products, one
// thread: 136–147 GFLOP/s without, 157–167 at 16 and 64 rows ahead, 132–136 at
// 256 (engine/README.md).
constexpr int kPrefetchRows = 32;

template <class T>
constexpr int64_t panel_width() {
  return kPanelVectors * kLanes<T>;
}

template <class T>
int64_t panel_count(int64_t n) {
  return (n + panel_width<T>() - 1) / panel_width<T>();
}

// Panels [p0, p1) of w [K, N] (either layout) into out, which holds
// panel_count(N) · K · panel_width entries.
template <class T>
void pack_panels(const MatrixIn<T>& w, T* out, int64_t p0, int64_t p1) {
  constexpr int64_t P = panel_width<T>();
  const int64_t K = w.rows, N = w.cols;
  for (int64_t p = p0; p < p1; ++p) {
    T* panel = out + p * K * P;
    const int64_t c0 = p * P, width = std::min(P, N - c0);
    for (int64_t k = 0; k < K; ++k) {
      T* row = panel + k * P;
      for (int64_t j = 0; j < width; ++j)
        row[j] = w.row_major ? w.data[k * w.leading + c0 + j] : w.data[k + (c0 + j) * w.leading];
      for (int64_t j = width; j < P; ++j) row[j] = T(0);
    }
  }
}

// out[:, columns of panels p0 … p1-1] = a·W, or += a·W when `accumulate`; out
// row-major [a.rows, N] with leading dimension ldo, a [M, K] of either layout.
// An element's sum: its first depth block's, then each next block's added on,
// whichever threads share the panels.
template <class T>
void panel_matmul(const MatrixIn<T>& a, const T* panels, int64_t N, T* out, int64_t ldo, bool accumulate, int64_t p0,
                  int64_t p1) {
  constexpr int64_t P = panel_width<T>();
  const int64_t M = a.rows, K = a.cols;
  // The last panel when N is not a whole number of panels: its tiles go through
  // a buffer as wide as the panel, which starts as out's columns (zeros past N).
  const bool ragged = N % P != 0 && p1 == panel_count<T>(N) && p0 < p1;
  std::vector<T> edge;
  if (ragged) {
    edge.assign(static_cast<size_t>(M * P), T(0));
    const int64_t c0 = (p1 - 1) * P;
    if (accumulate)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N - c0; ++j) edge[i * P + j] = out[i * ldo + c0 + j];
  }
  for (int64_t p = p0; p < p1; ++p) {
    const bool whole = !(ragged && p == p1 - 1);
    T* z = whole ? out + p * P : edge.data();
    const int64_t z_row = whole ? ldo : P;
    if (K == 0 && !accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(z + i * z_row, z + i * z_row + P, T(0));
    for (int64_t k0 = 0; k0 < K; k0 += kDepthBlock) {
      const int64_t depth = std::min(kDepthBlock, K - k0);
      const Strided<T> rows = a.row_major ? Strided<T>{a.data + k0, a.leading, 1}
                                          : Strided<T>{a.data + k0 * a.leading, 1, a.leading};
      const T* y = panels + (p * K + k0) * P;
      if (k0 == 0 && !accumulate)
        matmul_columns<T, kPanelRows, kPanelVectors, false, kPrefetchRows>(M, depth, T(1), rows, y, P, z, z_row, 0);
      else
        matmul_columns<T, kPanelRows, kPanelVectors, true, kPrefetchRows>(M, depth, T(1), rows, y, P, z, z_row, 0);
    }
  }
  if (ragged) {
    const int64_t c0 = (p1 - 1) * P;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N - c0; ++j) out[i * ldo + c0 + j] = edge[i * P + j];
  }
}

}  // namespace loom::cpu
