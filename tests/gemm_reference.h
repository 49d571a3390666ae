// gemm_reference.h: what the product tests compare with (test_gemm_library.cpp,
// test_panel_matmul.cpp): seeded normal values, a matrix of them handed over in
// either layout, and their product summed in double beside the sums of |a_ik b_kj|
// that bound any order of float additions (at most K · unit roundoff times it).
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "engine/ops.h"

namespace loom::test {

template <class T = float>
std::vector<T> normal_values(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<T> normal;
  std::vector<T> v(static_cast<size_t>(n));
  for (T& x : v) x = normal(gen);
  return v;
}

// a [M, K] · b [K, N] of row-major values, summed in double, and the sums of the
// terms' magnitudes.
struct Product {
  std::vector<double> value, magnitude;
};
template <class T>
Product product_loop(const std::vector<T>& a, const std::vector<T>& b, int64_t M, int64_t K, int64_t N) {
  Product p{std::vector<double>(static_cast<size_t>(M * N), 0.0), std::vector<double>(static_cast<size_t>(M * N), 0.0)};
  for (int64_t i = 0; i < M; ++i)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < N; ++j) {
        const double term = double(a[i * K + k]) * double(b[k * N + j]);
        p.value[i * N + j] += term;
        p.magnitude[i * N + j] += std::abs(term);
      }
  return p;
}

// The row-major values [rows, cols] as a product receives them: stored row-major,
// or stored transposed and handed over as a transposed view (column-major).
template <class T>
Tensor operand(const std::vector<T>& values, int64_t rows, int64_t cols, bool column_major) {
  if (!column_major) return Tensor::from_vector(values, {rows, cols});
  std::vector<T> stored(values.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) stored[c * rows + r] = values[r * cols + c];
  return transpose(Tensor::from_vector(stored, {cols, rows}), 0, 1);
}

}  // namespace loom::test
