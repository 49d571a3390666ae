// reduce.cpp: sum, mean, max, logsumexp, argmax over chosen axes, and sum_to.
//
// Every reduction records its axes as ints = {keepdim, axis0, axis1, ...}
// (normalised, sorted) so the backward rule can broadcast the gradient back.
#include <algorithm>
#include <cmath>

#include "engine/ops/op_helpers.h"

namespace loom {

namespace {

// x's shape with the reduced axes set to 1 (keepdim) or removed.
Shape reduced_shape(const Shape& shape, const std::vector<int>& axes, bool keepdim) {
  Shape out;
  for (size_t d = 0; d < shape.size(); ++d) {
    const bool reduced = std::find(axes.begin(), axes.end(), static_cast<int>(d)) != axes.end();
    if (!reduced) out.push_back(shape[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

// Runs the reduce kernel; the result has keepdim shape.
Tensor reduce_keepdim(ReduceOp op, const Tensor& x, const std::vector<int>& axes, DType out_dtype) {
  Tensor out = Tensor::empty(reduced_shape(x.shape(), axes, true), out_dtype, x.device());
  backend_for(x).reduce(op, x, axes, out);
  return out;
}

Tensor drop_axes(const Tensor& t, const Shape& shape) {
  return t.as_strided(shape, contiguous_strides(shape), t.offset());
}

std::vector<int64_t> reduce_ints(bool keepdim, const std::vector<int>& axes) {
  std::vector<int64_t> ints{keepdim ? 1 : 0};
  ints.insert(ints.end(), axes.begin(), axes.end());
  return ints;
}

int64_t count_over(const Shape& shape, const std::vector<int>& axes) {
  int64_t n = 1;
  for (int a : axes) n *= shape[a];
  return n;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& axes_in, bool keepdim) {
  detail::check_float("sum", x);
  const auto axes = normalize_axes(axes_in, x.dim(), "sum");
  Tensor out = reduce_keepdim(ReduceOp::sum, x, axes, x.dtype());
  if (!keepdim) out = drop_axes(out, reduced_shape(x.shape(), axes, false));
  if (needs_grad({&x})) record({OpId::sum, {x}, {}, reduce_ints(keepdim, axes)}, out);
  return out;
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& axes_in, bool keepdim) {
  detail::check_float("mean", x);
  const auto axes = normalize_axes(axes_in, x.dim(), "mean");
  const int64_t n = count_over(x.shape(), axes);
  LOOM_CHECK(n > 0, "mean: reducing over an empty axis of ", x.describe());
  Tensor out = reduce_keepdim(ReduceOp::sum, x, axes, x.dtype());
  backend_for(x).binary(BinaryOp::mul, out, detail::broadcast_view(detail::scalar_like(1.0 / n, x), out.shape()),
                        out);
  if (!keepdim) out = drop_axes(out, reduced_shape(x.shape(), axes, false));
  if (needs_grad({&x})) record({OpId::mean, {x}, {}, reduce_ints(keepdim, axes), {double(n)}}, out);
  return out;
}

Tensor max(const Tensor& x, const std::vector<int64_t>& axes_in, bool keepdim) {
  detail::check_float("max", x);
  const auto axes = normalize_axes(axes_in, x.dim(), "max");
  LOOM_CHECK(count_over(x.shape(), axes) > 0, "max: reducing over an empty axis of ", x.describe());
  Tensor out = reduce_keepdim(ReduceOp::max, x, axes, x.dtype());
  if (!keepdim) out = drop_axes(out, reduced_shape(x.shape(), axes, false));
  if (needs_grad({&x})) record({OpId::max, {x}, {}, reduce_ints(keepdim, axes)}, out);
  return out;
}

Tensor logsumexp(const Tensor& x, const std::vector<int64_t>& axes_in, bool keepdim) {
  detail::check_float("logsumexp", x);
  const auto axes = normalize_axes(axes_in, x.dim(), "logsumexp");
  LOOM_CHECK(count_over(x.shape(), axes) > 0, "logsumexp: reducing over an empty axis of ", x.describe());
  Tensor out;
  {
    // max + log(sum(exp(x - max))): never overflows. Composed of ops without recording.
    GradModeGuard no_grad(false);
    const Tensor m = reduce_keepdim(ReduceOp::max, x, axes, x.dtype());
    // Rows that are all -inf would give nan (-inf - -inf); shift them by 0 instead.
    const Tensor safe_m = where(eq(m, detail::scalar_like(-INFINITY, x)), detail::scalar_like(0.0, x), m);
    const Tensor s = reduce_keepdim(ReduceOp::sum, exp(sub(x.detach(), safe_m)), axes, x.dtype());
    out = add(log(s), safe_m);
  }
  if (!keepdim) out = drop_axes(out, reduced_shape(x.shape(), axes, false));
  if (needs_grad({&x})) record({OpId::logsumexp, {x}, {}, reduce_ints(keepdim, axes)}, out);
  return out;
}

Tensor argmax(const Tensor& x, int64_t axis, bool keepdim) {
  detail::check_float("argmax", x);
  const int a = normalize_axis(axis, x.dim(), "argmax");
  LOOM_CHECK(x.shape()[a] > 0, "argmax: axis ", a, " of ", x.describe(), " is empty");
  Tensor out = reduce_keepdim(ReduceOp::argmax, x, {a}, DType::i64);
  if (!keepdim) out = drop_axes(out, reduced_shape(x.shape(), {a}, false));
  ran(OpId::argmax, out);  // never recorded: tell a watching test
  return out;
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  LOOM_CHECK(shape.size() <= x.shape().size(), "sum_to: cannot sum ", shape_str(x.shape()), " to ",
             shape_str(shape));
  const size_t lead = x.shape().size() - shape.size();
  std::vector<int64_t> axes;
  for (size_t d = 0; d < x.shape().size(); ++d) {
    if (d < lead) {
      axes.push_back(static_cast<int64_t>(d));
    } else if (shape[d - lead] == 1 && x.shape()[d] != 1) {
      axes.push_back(static_cast<int64_t>(d));
    } else {
      LOOM_CHECK(shape[d - lead] == x.shape()[d], "sum_to: cannot sum ", shape_str(x.shape()), " to ",
                 shape_str(shape));
    }
  }
  Tensor out = axes.empty() ? x : sum(x, axes, true);
  return reshape(out, shape);
}

// ---- backward rules ----------------------------------------------------------------
//
// Backward rules of the reductions.
//
// A reduction records ints = {keepdim, axes...}. Its gradient is the output
// gradient with the reduced axes put back as size 1, broadcast over the input.

namespace {

// t with the reduced axes restored as size-1 dims (a no-op when keepdim was set).
Tensor keepdim_view(const RecordedOp& n, const Tensor& t, const Shape& input_shape) {
  if (n.ints[0]) return t;
  Shape shape = input_shape;
  for (size_t i = 1; i < n.ints.size(); ++i) shape[n.ints[i]] = 1;
  return reshape(t, shape);
}

Grads sum_rule(const RecordedOp& n, const Tensor& g) {
  const Shape& shape = n.input_shapes[0];
  return {expand(keepdim_view(n, g, shape), shape)};
}

Grads mean_rule(const RecordedOp& n, const Tensor& g) {
  const Shape& shape = n.input_shapes[0];
  return {expand(keepdim_view(n, g, shape) / n.reals[0], shape)};
}

// Ties share the gradient equally (like torch.amax).
Grads max_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor& x = n.input(0);
  const Tensor winners = eq(x, keepdim_view(n, n.output, x.shape()));
  std::vector<int64_t> axes(n.ints.begin() + 1, n.ints.end());
  const Tensor count = sum(winners, axes, true);
  return {winners * keepdim_view(n, g, x.shape()) / count};
}

// d logsumexp(x) / dx = softmax(x) = exp(x - logsumexp(x))
Grads logsumexp_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor& x = n.input(0);
  return {exp(x - keepdim_view(n, n.output, x.shape())) * keepdim_view(n, g, x.shape())};
}

// {inputs, output}: what each rule keeps alive for its backward.
const RuleRegistration reduce_rules[] = {
    {OpId::sum, {sum_rule, false, false}},
    {OpId::mean, {mean_rule, false, false}},
    {OpId::max, {max_rule, true, true}},
    {OpId::logsumexp, {logsumexp_rule, true, true}},
};
}  // namespace

}  // namespace loom
