// sum_normalise.cpp: the sum normalisation of the fast weights' feature maps,
// φ / (Σφ + eps) over the last axis, as one op; elu_plus_one_normalised puts
// the ELU+1 map in front of it.
//
// Composed, `phi / (sum(phi, {-1}, true) + eps)` is a reduction, a scalar add
// and a broadcast division forward, and backward the division's two gradients,
// a second reduction and an add; ELU+1 adds two passes forward and four
// backward. Fused, each direction is one pass over the rows, with the same
// operations in the same order (engine/kernels/sum_normalise.h), so the CPU
// gives the composition's bits.
//
// The backward keeps e (the features: x itself, or ELU(x) + 1) and the row's
// denominator; the output is not kept.
#include "engine/ops/op_helpers.h"

#include <cmath>

namespace loom {

namespace {

const char* const kOp = "sum_normalise";

Tensor normalise(const Tensor& x, double eps, bool elu_plus_one, const char* op) {
  detail::check_float(op, x);
  LOOM_CHECK(x.dim() >= 1, op, ": x must have at least 1 dim [..., n], got ", x.describe());
  LOOM_CHECK(x.shape().back() >= 1, op, ": x ", shape_str(x.shape()), " has an empty last axis (n = 0)");
  LOOM_CHECK(std::isfinite(eps) && eps >= 0.0, op, ": eps must be finite and >= 0, got ", eps);
  const bool grad = needs_grad({&x});
  // With the ELU+1 map the kernel writes the features itself and reads x in place
  // where it can (a window of a projection, in the models); without it x is kept
  // as the features, dense.
  const Tensor x_read = elu_plus_one ? x : dense(x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  Shape den_shape = x.shape();
  den_shape.back() = 1;
  Tensor den = Tensor::empty(den_shape, x.dtype(), x.device());
  // Without a map the features are x; with one the backward needs them kept.
  Tensor features = elu_plus_one && grad ? Tensor::empty(x.shape(), x.dtype(), x.device()) : Tensor();
  backend_for(x).sum_normalise(x_read, eps, elu_plus_one, out, features, den);
  if (grad) {
    record({OpId::sum_normalise, {x}, {elu_plus_one ? features : x_read, den}, {elu_plus_one ? 1 : 0}}, out);
  }
  return out;
}

}  // namespace

Tensor sum_normalise(const Tensor& phi, double eps) { return normalise(phi, eps, false, kOp); }

Tensor elu_plus_one_normalised(const Tensor& x, double eps) {
  return normalise(x, eps, true, "elu_plus_one_normalised");
}

// ---- backward rules ----------------------------------------------------------------
//
// One kernel, one pass over the rows (formulas in engine/kernels/sum_normalise.h).
// The rule calls the kernel directly, as the other fused ops do: no double backward.

namespace {

// inputs = {x} (not kept), saved = {e (x itself without a map), den}, ints = {elu_plus_one}.
Grads sum_normalise_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor& features = n.saved[0];
  Tensor gx = Tensor::empty(features.shape(), features.dtype(), features.device());
  backend_for(features).sum_normalise_backward(dense(g), features, n.saved[1], n.ints[0] != 0, gx);
  return {gx};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration sum_normalise_rules[] = {
    {OpId::sum_normalise, {sum_normalise_rule, false, false}},
};
}  // namespace

}  // namespace loom
