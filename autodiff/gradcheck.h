// gradcheck.h: checking backward rules against finite differences.
//
// f maps input tensors to an output tensor. gradcheck reduces the output to a
// scalar L = sum(f(x) * W) with a fixed random W (so every output element
// matters, each with its own weight), computes dL/dx by backward(), and compares
// it with central differences (L(x + eps) - L(x - eps)) / 2eps, element by
// element of every input that requires grad. Use float64 inputs: in float32 the
// differences drown in rounding.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace loom::autodiff {

struct GradcheckOptions {
  double eps = 1e-6;        // finite-difference step
  double tolerance = 1e-6;  // on the relative error, see GradcheckResult
  uint64_t seed = 1234;     // for the weights W
};

struct GradcheckResult {
  bool ok = false;
  // max over inputs of |analytic - numeric|_2 / max(|numeric|_2, 1e-8)
  double max_relative_error = 0.0;
  std::string report;  // which input, worst element, both values
};

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// inputs: contiguous float64 CPU leaves; those with requires_grad are checked.
GradcheckResult gradcheck(const TensorFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

}  // namespace loom::autodiff
