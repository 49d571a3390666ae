// small_products.h: the matrix products of the chunked delta rule
// (engine/cpu/delta_rule.cpp) and of attention's query blocks
// (engine/cpu/attention.cpp). Their operands are a few dozen rows of at most a
// few hundred entries, in L1 or L2, and each product is called once per chunk of
// steps or block of queries. Eigen's GEMM packs both operands at every call, which at these sizes
// cost as much as the product (engine/README.md, "Measurements behind the CPU
// kernels"). So the two kernels here read their operands in place:
//
//   small_matmul:  Z += alpha·A·Y. Y and Z are row-major, and a tile of Z
//                  (MR rows × NR vectors) stays in registers while the depth is
//                  walked: per depth step, NR loads of Y and MR broadcasts of A
//                  feed MR·NR multiply-adds. A is read through strides, so Aᵀ
//                  costs nothing.
//   row_dots:      Z[p, q] = X[p]·Y[q] for rows of two row-major matrices, a few
//                  rows of each at a time: one vector accumulator per pair over the
//                  shared dimension, then their lanes summed together (sum_rows).
//                  This is X·Yᵀ without a transposed copy of either.
//
// The tiles' sizes follow the registers the target has (kVectorRegisters): with
// AVX-512's 32, 4 × 4 vectors of Z (and 4 × 4 pairs of dots); with AVX2's 16,
// 6 × 2 (and 2 × 4), since a 16-accumulator tile spills there. On a Zen 3, the
// 4 × 4 tiles made the chunks slower than the step kernels (engine/README.md).
//
// The vector type and its helpers are those of engine/cpu/delta_rows.h.
#pragma once

#include <algorithm>
#include <cstdint>

#include "engine/cpu/delta_rows.h"

namespace loom::cpu {

// ---- small_matmul ------------------------------------------------------------------------

// A strided matrix operand: element (r, c) at data[r·row + c·col].
template <class T>
struct Strided {
  const T* data;
  int64_t row, col;
  T at(int64_t r, int64_t c) const { return data[r * row + c * col]; }
};

// Z += alpha·A·Y on a tile; with Accumulate false, Z = alpha·A·Y (Z is not read).
// With Ahead > 0, each depth step also prefetches the row of Y Ahead steps on
// (for operands streamed from memory: panel_matmul.h); the sums are the same.
template <class T, int MR, int NR, bool Accumulate = true, int Ahead = 0>
inline void matmul_tile(int64_t depth, T alpha, Strided<T> A, const T* Y, int64_t y_row, T* Z, int64_t z_row) {
  constexpr int64_t V = kLanes<T>;
  constexpr int64_t kLine = 64 / sizeof(T);  // entries per cache line
  Vec<T> acc[MR][NR] = {};
  for (int64_t q = 0; q < depth; ++q) {
    if constexpr (Ahead > 0)
      for (int64_t e = 0; e < NR * V; e += kLine) __builtin_prefetch(Y + (q + Ahead) * y_row + e);
    Vec<T> y[NR];
    for (int n = 0; n < NR; ++n) y[n] = load(Y + q * y_row + n * V);
    for (int r = 0; r < MR; ++r) {
      const T a = A.at(r, q);
      for (int n = 0; n < NR; ++n) acc[r][n] += a * y[n];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int n = 0; n < NR; ++n) {
      if constexpr (Accumulate) store(Z + r * z_row + n * V, load(Z + r * z_row + n * V) + alpha * acc[r][n]);
      else store(Z + r * z_row + n * V, alpha * acc[r][n]);
    }
}

// The rows of Z in blocks of MR, the rest in one block of 4 where MR is larger,
// then one at a time, for the NR vectors from column n0.
template <class T, int MR, int NR, bool Accumulate = true, int Ahead = 0>
inline void matmul_columns(int64_t rows, int64_t depth, T alpha, Strided<T> A, const T* Y, int64_t y_row, T* Z,
                           int64_t z_row, int64_t n0) {
  int64_t p = 0;
  for (; p + MR <= rows; p += MR)
    matmul_tile<T, MR, NR, Accumulate, Ahead>(depth, alpha, {A.data + p * A.row, A.row, A.col}, Y + n0, y_row,
                                       Z + p * z_row + n0, z_row);
  if constexpr (MR > 4)
    if (p + 4 <= rows) {
      matmul_tile<T, 4, NR, Accumulate, Ahead>(depth, alpha, {A.data + p * A.row, A.row, A.col}, Y + n0, y_row,
                                        Z + p * z_row + n0, z_row);
      p += 4;
    }
  for (; p < rows; ++p)
    matmul_tile<T, 1, NR, Accumulate, Ahead>(depth, alpha, {A.data + p * A.row, A.row, A.col}, Y + n0, y_row,
                                      Z + p * z_row + n0, z_row);
}

// Z[p, n] += alpha Σ_q A(p, q) Y[q·y_row + n] for p < rows, q < depth, n < cols;
// with Accumulate false, Z = that sum (Z is not read).
template <class T, bool Accumulate = true>
void small_matmul(int64_t rows, int64_t depth, int64_t cols, T alpha, Strided<T> A, const T* Y, int64_t y_row, T* Z,
                  int64_t z_row) {
  constexpr int64_t V = kLanes<T>;
  int64_t n = 0;
  if constexpr (kVectorRegisters >= 32) {  // 4 × 4 accumulators + 4 of Y + 1 of A: 21 registers
    for (; n + 4 * V <= cols; n += 4 * V)
      matmul_columns<T, 4, 4, Accumulate>(rows, depth, alpha, A, Y, y_row, Z, z_row, n);
    for (; n + 2 * V <= cols; n += 2 * V)
      matmul_columns<T, 8, 2, Accumulate>(rows, depth, alpha, A, Y, y_row, Z, z_row, n);
  } else {  // 16 registers: 6 × 2 + 2 + 1 = 15
    for (; n + 2 * V <= cols; n += 2 * V)
      matmul_columns<T, 6, 2, Accumulate>(rows, depth, alpha, A, Y, y_row, Z, z_row, n);
  }
  for (; n + V <= cols; n += V) matmul_columns<T, 8, 1, Accumulate>(rows, depth, alpha, A, Y, y_row, Z, z_row, n);
  for (; n < cols; ++n)  // the columns past the last whole vector
    for (int64_t p = 0; p < rows; ++p) {
      T sum = 0;
      for (int64_t q = 0; q < depth; ++q) sum += A.at(p, q) * Y[q * y_row + n];
      if constexpr (Accumulate) Z[p * z_row + n] += alpha * sum;
      else Z[p * z_row + n] = alpha * sum;
    }
}

// ---- row_dots --------------------------------------------------------------------------

template <class T, int RX, int RY>
inline void dots_tile(int64_t n, const T* X, int64_t x_row, const T* Y, int64_t y_row, T* Z, int64_t z_row) {
  constexpr int64_t V = kLanes<T>;
  Vec<T> acc[RX * RY] = {};
  int64_t j = 0;
  for (; j + V <= n; j += V) {
    Vec<T> y[RY];
    for (int b = 0; b < RY; ++b) y[b] = load(Y + b * y_row + j);
    for (int a = 0; a < RX; ++a) {
      const Vec<T> x = load(X + a * x_row + j);
      for (int b = 0; b < RY; ++b) acc[a * RY + b] += x * y[b];
    }
  }
  for (; j < n; ++j)
    for (int a = 0; a < RX; ++a)
      for (int b = 0; b < RY; ++b) acc[a * RY + b][0] += X[a * x_row + j] * Y[b * y_row + j];
  T sums[RX * RY];
  sum_each<T, RX * RY>(acc, sums);
  for (int a = 0; a < RX; ++a)
    for (int b = 0; b < RY; ++b) Z[a * z_row + b] = sums[a * RY + b];
}

// Z[p·z_row + q] = X[p]·Y[q] (n entries each) for p < rows_x, q < rows_y. With
// `lower`, blocks of four whose every q is above their every p are skipped:
// callers that read only q <= p save half the work (entries just above the
// diagonal are still written).
template <class T>
void row_dots(int64_t rows_x, int64_t rows_y, int64_t n, const T* X, int64_t x_row, const T* Y, int64_t y_row, T* Z,
              int64_t z_row, bool lower = false) {
  // Tiles of BX rows of X by BY rows of Y: BX·BY accumulators + BY of Y + 1 of X.
  constexpr int BX = kVectorRegisters >= 32 ? 4 : 2, BY = 4;
  for (int64_t p = 0; p < rows_x; p += BX) {
    const int64_t px = rows_x - p;
    for (int64_t q = 0; q < rows_y; q += BY) {
      if (lower && q > p + BX - 1) break;
      const int64_t qy = rows_y - q;
      const T* x = X + p * x_row;
      const T* y = Y + q * y_row;
      T* z = Z + p * z_row + q;
      if (px >= BX && qy >= BY) {
        dots_tile<T, BX, BY>(n, x, x_row, y, y_row, z, z_row);
      } else {  // the last rows of either: one pair at a time
        for (int64_t a = 0; a < std::min<int64_t>(px, BX); ++a)
          for (int64_t b = 0; b < std::min<int64_t>(qy, BY); ++b)
            dots_tile<T, 1, 1>(n, x + a * x_row, x_row, y + b * y_row, y_row, z + a * z_row + b, z_row);
      }
    }
  }
}

}  // namespace loom::cpu
