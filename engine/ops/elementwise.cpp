// elementwise.cpp: unary and binary ops, comparisons, where and masked_fill,
// each with its backward rule.
//
// The unary, binary and comparison ops are rows of the tables in
// engine/elementwise_functors.h: their public functions and their backward
// rules are generated below from the rows. where and masked_fill are written
// out. g is the gradient of the op's output; each rule returns one gradient per
// input. Broadcasting is undone by the caller (autodiff/backward.cpp), not here.
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
  if (id == OpId::compare) ran(id, out);  // never recorded: tell a watching test
  else if (needs_grad({&a, &b})) record({id, {a, b}}, out);
  return out;
}

}  // namespace

// The public functions of the table rows without a parameter
// (LOOM_UNARY_OPS, LOOM_BINARY_OPS, LOOM_COMPARE_OPS in elementwise_functors.h).
#define LOOM_DEFINE_UNARY(name, ...) \
  Tensor name(const Tensor& x) { return unary(OpId::name, UnaryOp::name, x); }
#define LOOM_DEFINE_BINARY(name, ...) \
  Tensor name(const Tensor& a, const Tensor& b) { return binary(OpId::name, BinaryOp::name, a, b); }
#define LOOM_DEFINE_COMPARE(name, ...) \
  Tensor name(const Tensor& a, const Tensor& b) { return binary(OpId::compare, BinaryOp::name, a, b); }
LOOM_UNARY_OPS(LOOM_DEFINE_UNARY)
LOOM_BINARY_OPS(LOOM_DEFINE_BINARY)
LOOM_COMPARE_OPS(LOOM_DEFINE_COMPARE)
#undef LOOM_DEFINE_UNARY
#undef LOOM_DEFINE_BINARY
#undef LOOM_DEFINE_COMPARE

Tensor elu(const Tensor& x, double alpha) { return unary(OpId::elu, UnaryOp::elu, x, alpha); }
Tensor pow(const Tensor& x, double exponent) { return unary(OpId::pow_scalar, UnaryOp::pow_scalar, x, exponent); }

Tensor add(const Tensor& a, double b) { return add(a, detail::scalar_like(b, a)); }
Tensor sub(const Tensor& a, double b) { return sub(a, detail::scalar_like(b, a)); }
Tensor mul(const Tensor& a, double b) { return mul(a, detail::scalar_like(b, a)); }
Tensor div(const Tensor& a, double b) { return div(a, detail::scalar_like(b, a)); }

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

namespace {
// saved = {cond}: the gradient goes to a where cond != 0, to b elsewhere.
Grads where_rule(const RecordedOp& n, const Tensor& g) {
  const Tensor& cond = n.saved[0];
  const Tensor zero = Tensor::scalar(0.0, g.dtype(), g.device());
  return {where(cond, g, zero), where(cond, zero, g)};
}
const RuleRegistration where_registration(OpId::where, {where_rule, /*inputs=*/false, /*output=*/false});
}  // namespace

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

namespace {
// saved = {mask}: filled elements get no gradient.
Grads masked_fill_rule(const RecordedOp& n, const Tensor& g) {
  return {where(n.saved[0], Tensor::scalar(0.0, g.dtype(), g.device()), g)};
}
const RuleRegistration masked_fill_registration(OpId::masked_fill, {masked_fill_rule, false, false});
}  // namespace

// ---- backward rules of the table rows -------------------------------------------

namespace {

// What a generated rule keeps alive for its expression (the `keeps` column).
struct Keeps {
  bool inputs, output;
};
namespace keeps {
constexpr Keeps none{false, false}, x{true, false}, y{false, true}, xy{true, true}, ab{true, false};
}  // namespace keeps

// The helper kernels of LOOM_UNARY_KERNELS, as kernel::name(x) (not recorded).
namespace kernel {
#define LOOM_DEFINE_KERNEL(name, ...)                               \
  [[maybe_unused]] Tensor name(const Tensor& x) {                   \
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());   \
    backend_for(x).unary(UnaryOp::name, x, out, 0.0);               \
    return out;                                                     \
  }
LOOM_UNARY_KERNELS(LOOM_DEFINE_KERNEL)
#undef LOOM_DEFINE_KERNEL
// ...and those of LOOM_BINARY_KERNELS, as kernel::name(g, x), g of x's shape.
#define LOOM_DEFINE_BINARY_KERNEL(name, ...)                                      \
  [[maybe_unused]] Tensor name(const Tensor& g, const Tensor& x) {                \
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());                 \
    backend_for(x).binary(BinaryOp::name, detail::broadcast_view(g, x.shape()), x, out); \
    return out;                                                                   \
  }
LOOM_BINARY_KERNELS(LOOM_DEFINE_BINARY_KERNEL)
#undef LOOM_DEFINE_BINARY_KERNEL
}  // namespace kernel

// One rule per row: the `grad` column with x, y, p (and a, b) bound to what the
// node kept. A tensor the row does not keep is undefined here.
#define LOOM_UNARY_RULE(name, Functor, keep, grad)            \
  Grads name##_rule(const RecordedOp& n, const Tensor& g) {   \
    const Tensor x = keeps::keep.inputs ? n.input(0) : Tensor(); \
    const Tensor& y = n.output;                               \
    const double p = n.reals.empty() ? 0.0 : n.reals[0];      \
    (void)x, (void)y, (void)p;                                \
    return {grad};                                            \
  }
#define LOOM_BINARY_RULE(name, Functor, keep, grad_a, grad_b)    \
  Grads name##_rule(const RecordedOp& n, const Tensor& g) {      \
    const Tensor a = keeps::keep.inputs ? n.input(0) : Tensor(); \
    const Tensor b = keeps::keep.inputs ? n.input(1) : Tensor(); \
    (void)a, (void)b;                                            \
    return {n.needs_input_grad(0) ? Tensor(grad_a) : Tensor(),   \
            n.needs_input_grad(1) ? Tensor(grad_b) : Tensor()};  \
  }
LOOM_UNARY_OPS(LOOM_UNARY_RULE)
LOOM_UNARY_OPS_WITH_PARAM(LOOM_UNARY_RULE)
LOOM_BINARY_OPS(LOOM_BINARY_RULE)
#undef LOOM_UNARY_RULE
#undef LOOM_BINARY_RULE

#define LOOM_REGISTER(name, Functor, keep, ...) {OpId::name, {name##_rule, keeps::keep.inputs, keeps::keep.output}},
const RuleRegistration table_rules[] = {
    LOOM_UNARY_OPS(LOOM_REGISTER) LOOM_UNARY_OPS_WITH_PARAM(LOOM_REGISTER) LOOM_BINARY_OPS(LOOM_REGISTER)};
#undef LOOM_REGISTER

}  // namespace

}  // namespace loom
