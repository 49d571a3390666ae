// fused_check.h: helpers for testing a fused op against the same math composed
// of elementary ops, and for checking error messages.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/kernels/layout.h"
#include "engine/ops.h"
#include "tests/test_util.h"

namespace loom::test {

// A float64 tensor of `shape` with values uniform in [lo, hi).
inline Tensor random_f64(const Shape& shape, uint64_t seed, double lo = -3.0, double hi = 3.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(shape_numel(shape));
  for (double& x : v) x = u(rng);
  return Tensor::from_vector(v, shape);
}

// f's output and the gradients of sum(f(xs) * W) for a fixed random W, as doubles.
struct Evaluated {
  std::vector<double> out;
  std::vector<std::vector<double>> grads;  // one per input
};

// Runs f on fresh leaves copied from `values` (so that two functions can be run
// on the same values) and backpropagates. f must return a float64 tensor.
inline Evaluated evaluate(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& values) {
  std::vector<Tensor> leaves;
  for (const Tensor& v : values) leaves.push_back(clone(v).requires_grad_());
  const Tensor out = f(leaves);
  sum(out * random_f64(out.shape(), 99)).backward();
  Evaluated e{cast(out.detach(), DType::f64).to_vector<double>(), {}};
  for (const Tensor& l : leaves) {
    REQUIRE_MESSAGE(l.grad().defined(), "no gradient reached an input");
    e.grads.push_back(cast(l.grad(), DType::f64).to_vector<double>());
  }
  return e;
}

// max |a - b| relative to max |b|.
inline double relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  if (std::isnan(diff)) return INFINITY;
  return diff / std::max(scale, 1e-300);
}

// The same dtype, element count and bytes (contiguous copies, on the CPU): -0
// and +0, or two NaNs of other payloads, are other bits.
inline bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor x = contiguous(a.to(Device::cpu)), y = contiguous(b.to(Device::cpu));
  return x.dtype() == y.dtype() && x.numel() == y.numel() &&
         std::memcmp(x.raw_data(), y.raw_data(), static_cast<size_t>(x.numel()) * dtype_size(x.dtype())) == 0;
}

// Outputs and every input gradient agree within `tolerance` (relative).
inline void check_same(const Evaluated& got, const Evaluated& expected, double tolerance) {
  const double d_out = relative_difference(got.out, expected.out);
  CHECK_MESSAGE(d_out <= tolerance, "output: relative difference ", d_out);
  REQUIRE(got.grads.size() == expected.grads.size());
  for (size_t i = 0; i < got.grads.size(); ++i) {
    const double d = relative_difference(got.grads[i], expected.grads[i]);
    CHECK_MESSAGE(d <= tolerance, "gradient of input ", i, ": relative difference ", d);
  }
}


// Checks a buffer layout of engine/kernels/: `regions` are the regions a kernel
// uses; none may overlap another, and together they must cover [0, total) with
// nothing left over, so the launcher's `total` is exactly what the kernel cuts.
inline void check_layout(const std::vector<kernels::Region>& regions, int64_t total) {
  std::vector<kernels::Region> sorted;
  for (const kernels::Region& r : regions) {
    CHECK(r.size >= 0);
    if (r.size > 0) sorted.push_back(r);
    else CHECK(r.offset <= total);  // an empty region overlaps nothing
  }
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
  int64_t covered = 0;
  for (const kernels::Region& r : sorted) {
    CHECK_MESSAGE(r.offset == covered, "region at " << r.offset << " (" << r.size << " elements): the regions before it end at " << covered);
    covered = std::max(covered, r.offset + r.size);
  }
  CHECK(covered == total);
}

}  // namespace loom::test
