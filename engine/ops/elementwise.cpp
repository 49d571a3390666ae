// elementwise.cpp: unary and binary ops, comparisons, where and masked_fill.
#include "engine/ops/op_helpers.h"

namespace loom {

using detail::broadcast_view;
using detail::check_float;
using detail::check_same;

namespace {

Tensor unary(OpId id, UnaryOp op, const Tensor& x, double param = 0.0) {
  check_float(op_name(id), x);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x).unary(op, x, out, param);
  if (needs_grad({&x})) record({id, {x}, {}, {}, {param}}, out);
  return out;
}

// Runs a binary kernel on a and b broadcast together; records under `id` unless
// the op is a comparison (not differentiable).
Tensor binary(OpId id, BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = id == OpId::compare ? binary_op_name(op) : op_name(id);
  check_same(name, a, b);
  check_float(name, a);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  backend_for(a).binary(op, broadcast_view(a, shape), broadcast_view(b, shape), out);
  if (id != OpId::compare && needs_grad({&a, &b})) record({id, {a, b}}, out);
  return out;
}

}  // namespace

Tensor neg(const Tensor& x) { return unary(OpId::neg, UnaryOp::neg, x); }
Tensor exp(const Tensor& x) { return unary(OpId::exp, UnaryOp::exp, x); }
Tensor log(const Tensor& x) { return unary(OpId::log, UnaryOp::log, x); }
Tensor sqrt(const Tensor& x) { return unary(OpId::sqrt, UnaryOp::sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary(OpId::rsqrt, UnaryOp::rsqrt, x); }
Tensor tanh(const Tensor& x) { return unary(OpId::tanh, UnaryOp::tanh, x); }
Tensor sigmoid(const Tensor& x) { return unary(OpId::sigmoid, UnaryOp::sigmoid, x); }
Tensor relu(const Tensor& x) { return unary(OpId::relu, UnaryOp::relu, x); }
Tensor squared_relu(const Tensor& x) { return unary(OpId::squared_relu, UnaryOp::squared_relu, x); }
Tensor elu(const Tensor& x, double alpha) { return unary(OpId::elu, UnaryOp::elu, x, alpha); }
Tensor gelu(const Tensor& x) { return unary(OpId::gelu, UnaryOp::gelu, x); }
Tensor pow(const Tensor& x, double exponent) { return unary(OpId::pow_scalar, UnaryOp::pow_scalar, x, exponent); }

Tensor add(const Tensor& a, const Tensor& b) { return binary(OpId::add, BinaryOp::add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(OpId::sub, BinaryOp::sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(OpId::mul, BinaryOp::mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(OpId::div, BinaryOp::div, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary(OpId::maximum, BinaryOp::maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary(OpId::minimum, BinaryOp::minimum, a, b); }

Tensor add(const Tensor& a, double b) { return add(a, detail::scalar_like(b, a)); }
Tensor sub(const Tensor& a, double b) { return sub(a, detail::scalar_like(b, a)); }
Tensor mul(const Tensor& a, double b) { return mul(a, detail::scalar_like(b, a)); }
Tensor div(const Tensor& a, double b) { return div(a, detail::scalar_like(b, a)); }

Tensor eq(const Tensor& a, const Tensor& b) { return binary(OpId::compare, BinaryOp::eq, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary(OpId::compare, BinaryOp::gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary(OpId::compare, BinaryOp::ge, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary(OpId::compare, BinaryOp::lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return binary(OpId::compare, BinaryOp::le, a, b); }
Tensor gt(const Tensor& a, double b) { return gt(a, detail::scalar_like(b, a)); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_same("where", a, b);
  check_float("where", a);
  detail::check_defined("where", cond, "condition");
  LOOM_CHECK(cond.device() == a.device(), "where: condition ", cond.describe(), " is not on the device of ",
             a.describe());
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  backend_for(a).where(broadcast_view(cond, shape), broadcast_view(a, shape), broadcast_view(b, shape), out);
  if (needs_grad({&a, &b})) record({OpId::where, {a, b}, {cond}}, out);
  return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  check_float("masked_fill", x);
  detail::check_defined("masked_fill", mask, "mask");
  LOOM_CHECK(mask.device() == x.device(), "masked_fill: mask ", mask.describe(), " is not on the device of ",
             x.describe());
  const Shape shape = broadcast_shapes(x.shape(), mask.shape(), "masked_fill");
  LOOM_CHECK(shape == x.shape(), "masked_fill: mask ", shape_str(mask.shape()),
             " does not broadcast to the input's shape ", shape_str(x.shape()));
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  const Tensor fill = broadcast_view(detail::scalar_like(value, x), shape);
  backend_for(x).where(broadcast_view(mask, shape), fill, x, out);
  if (needs_grad({&x})) record({OpId::masked_fill, {x}, {mask}, {}, {value}}, out);
  return out;
}

}  // namespace loom
