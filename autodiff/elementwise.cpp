// elementwise.cpp: backward rules of the elementwise ops.
//
// g is the gradient of the op's output; each rule returns one gradient per
// input. Broadcasting is undone by the caller (backward.cpp), not here.
#include "autodiff/rules.h"
#include "engine/backend.h"
#include "engine/ops.h"

namespace loom::autodiff {

namespace {

using Grads = std::vector<Tensor>;

Tensor unary_kernel(UnaryOp op, const Tensor& x, double param = 0.0) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(x).unary(op, x, out, param);
  return out;
}

Grads neg_rule(const Node&, const Tensor& g) { return {neg(g)}; }
Grads exp_rule(const Node& n, const Tensor& g) { return {g * n.output}; }
Grads log_rule(const Node& n, const Tensor& g) { return {g / n.input(0)}; }
Grads sqrt_rule(const Node& n, const Tensor& g) { return {g * 0.5 / n.output}; }
// d/dx x^(-1/2) = -1/2 x^(-3/2) = -1/2 y^3
Grads rsqrt_rule(const Node& n, const Tensor& g) { return {g * pow(n.output, 3.0) * -0.5}; }
Grads tanh_rule(const Node& n, const Tensor& g) { return {g * (1.0 - n.output * n.output)}; }
Grads sigmoid_rule(const Node& n, const Tensor& g) { return {g * n.output * (1.0 - n.output)}; }
Grads relu_rule(const Node& n, const Tensor& g) { return {g * gt(n.input(0), 0.0)}; }
Grads squared_relu_rule(const Node& n, const Tensor& g) { return {g * relu(n.input(0)) * 2.0}; }
// elu'(x) = 1 for x > 0, alpha e^x = elu(x) + alpha otherwise
Grads elu_rule(const Node& n, const Tensor& g) {
  const Tensor& x = n.input(0);
  const double alpha = n.reals[0];
  return {g * where(gt(x, 0.0), Tensor::scalar(1.0, x.dtype(), x.device()), n.output + alpha)};
}
Grads gelu_rule(const Node& n, const Tensor& g) { return {g * unary_kernel(UnaryOp::gelu_grad, n.input(0))}; }
Grads pow_rule(const Node& n, const Tensor& g) {
  const double p = n.reals[0];
  return {g * pow(n.input(0), p - 1.0) * p};
}

Grads add_rule(const Node&, const Tensor& g) { return {g, g}; }
Grads sub_rule(const Node&, const Tensor& g) { return {g, neg(g)}; }
Grads mul_rule(const Node& n, const Tensor& g) {
  return {n.needs_input_grad(0) ? g * n.input(1) : Tensor(), n.needs_input_grad(1) ? g * n.input(0) : Tensor()};
}
Grads div_rule(const Node& n, const Tensor& g) {
  const Tensor& a = n.input(0);
  const Tensor& b = n.input(1);
  const Tensor ga = g / b;
  return {ga, n.needs_input_grad(1) ? neg(ga * a / b) : Tensor()};
}
// The gradient goes to the larger input (to a on ties, matching the forward).
Grads maximum_rule(const Node& n, const Tensor& g) {
  const Tensor a_wins = ge(n.input(0), n.input(1));
  return {g * a_wins, g * (1.0 - a_wins)};
}
Grads minimum_rule(const Node& n, const Tensor& g) {
  const Tensor a_wins = le(n.input(0), n.input(1));
  return {g * a_wins, g * (1.0 - a_wins)};
}
Grads where_rule(const Node& n, const Tensor& g) {
  const Tensor& cond = n.saved[0];
  const Tensor zero = Tensor::scalar(0.0, g.dtype(), g.device());
  return {where(cond, g, zero), where(cond, zero, g)};
}
Grads masked_fill_rule(const Node& n, const Tensor& g) {
  return {where(n.saved[0], Tensor::scalar(0.0, g.dtype(), g.device()), g)};
}

}  // namespace

void register_elementwise_rules(RuleTable& t) {
  auto set = [&](OpId op, RuleFn fn, bool inputs, bool output) { t[int(op)] = Rule{fn, inputs, output}; };
  set(OpId::neg, neg_rule, false, false);
  set(OpId::exp, exp_rule, false, true);
  set(OpId::log, log_rule, true, false);
  set(OpId::sqrt, sqrt_rule, false, true);
  set(OpId::rsqrt, rsqrt_rule, false, true);
  set(OpId::tanh, tanh_rule, false, true);
  set(OpId::sigmoid, sigmoid_rule, false, true);
  set(OpId::relu, relu_rule, true, false);
  set(OpId::squared_relu, squared_relu_rule, true, false);
  set(OpId::elu, elu_rule, true, true);
  set(OpId::gelu, gelu_rule, true, false);
  set(OpId::pow_scalar, pow_rule, true, false);
  set(OpId::add, add_rule, false, false);
  set(OpId::sub, sub_rule, false, false);
  set(OpId::mul, mul_rule, true, false);
  set(OpId::div, div_rule, true, false);
  set(OpId::maximum, maximum_rule, true, false);
  set(OpId::minimum, minimum_rule, true, false);
  set(OpId::where, where_rule, false, false);
  set(OpId::masked_fill, masked_fill_rule, false, false);
}

}  // namespace loom::autodiff
