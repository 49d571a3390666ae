// cuda_test_inputs.h: the inputs and the read-back shared by the two files of the
// test_cuda executable (test_cuda.cpp at tiny shapes, test_cuda_sizes.cpp at the
// models' sizes). Inputs are made on the CPU from a seed, so a CUDA result and its
// CPU reference start from the same numbers.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/ops.h"

namespace loom::cuda_test {

// A CPU tensor of uniform values in [low, high), the same for the same seed.
inline Tensor random_cpu(const Shape& shape, uint64_t seed, double low = -1.0, double high = 1.0,
                         DType dtype = DType::f32) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(low, high);
  std::vector<double> v(shape_numel(shape));
  for (double& x : v) x = u(rng);
  Tensor t = Tensor::from_vector(v, shape);
  return dtype == DType::f64 ? t : t.to(dtype);
}

// Integers 0..bound-1 as int64.
inline Tensor random_ids(const Shape& shape, int64_t bound, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, bound - 1);
  std::vector<int64_t> v(shape_numel(shape));
  for (int64_t& x : v) x = pick(rng);
  return Tensor::from_vector(v, shape);
}

// Every element of a tensor as a double, row-major, read on the CPU.
inline std::vector<double> values(const Tensor& t) {
  GradModeGuard no_grad(false);
  return cast(t.to(Device::cpu), DType::f64).to_vector<double>();
}

}  // namespace loom::cuda_test
