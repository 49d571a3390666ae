// elementwise_functors.h: the math of every elementwise op, written once.
//
// Each op is a small struct with operator()(x[, y]). The CPU loops
// (engine/cpu/elementwise.cpp) and the CUDA kernels (cuda/elementwise.cu)
// instantiate the same functors, so both devices compute the same expression
// and the CPU-vs-CUDA tests check indexing rather than math.
#pragma once

#include <cmath>

#include "engine/backend.h"
#include "engine/host_device.h"

namespace loom::fn {

// ---- unary: operator()(x, param) ------------------------------------------------
struct Neg { template <class T> LOOM_HD T operator()(T x, T) const { return -x; } };
struct Exp { template <class T> LOOM_HD T operator()(T x, T) const { return std::exp(x); } };
struct Log { template <class T> LOOM_HD T operator()(T x, T) const { return std::log(x); } };
struct Sqrt { template <class T> LOOM_HD T operator()(T x, T) const { return std::sqrt(x); } };
struct Rsqrt { template <class T> LOOM_HD T operator()(T x, T) const { return T(1) / std::sqrt(x); } };
struct Tanh { template <class T> LOOM_HD T operator()(T x, T) const { return std::tanh(x); } };
struct Abs { template <class T> LOOM_HD T operator()(T x, T) const { return std::abs(x); } };
struct Sigmoid {
  // Written so that neither branch overflows: exp of a non-positive number only.
  template <class T> LOOM_HD T operator()(T x, T) const {
    if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
    const T e = std::exp(x);
    return e / (T(1) + e);
  }
};
struct Relu { template <class T> LOOM_HD T operator()(T x, T) const { return x > T(0) ? x : T(0); } };
struct SquaredRelu { template <class T> LOOM_HD T operator()(T x, T) const { return x > T(0) ? x * x : T(0); } };
struct Elu {  // param = alpha
  template <class T> LOOM_HD T operator()(T x, T alpha) const { return x > T(0) ? x : alpha * std::expm1(x); }
};
struct Gelu {  // exact GELU: x * Phi(x), Phi the standard normal CDF
  template <class T> LOOM_HD T operator()(T x, T) const {
    return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
  }
};
struct GeluGrad {  // d/dx [x Phi(x)] = Phi(x) + x phi(x)
  template <class T> LOOM_HD T operator()(T x, T) const {
    const T cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
    const T pdf = T(0.39894228040143267794) * std::exp(T(-0.5) * x * x);
    return cdf + x * pdf;
  }
};
struct PowScalar { template <class T> LOOM_HD T operator()(T x, T p) const { return std::pow(x, p); } };

// ---- binary: operator()(a, b) ---------------------------------------------------
struct Add { template <class T> LOOM_HD T operator()(T a, T b) const { return a + b; } };
struct Sub { template <class T> LOOM_HD T operator()(T a, T b) const { return a - b; } };
struct Mul { template <class T> LOOM_HD T operator()(T a, T b) const { return a * b; } };
struct Div { template <class T> LOOM_HD T operator()(T a, T b) const { return a / b; } };
struct Maximum { template <class T> LOOM_HD T operator()(T a, T b) const { return a >= b ? a : b; } };
struct Minimum { template <class T> LOOM_HD T operator()(T a, T b) const { return a <= b ? a : b; } };
struct Eq { template <class T> LOOM_HD T operator()(T a, T b) const { return a == b ? T(1) : T(0); } };
struct Gt { template <class T> LOOM_HD T operator()(T a, T b) const { return a > b ? T(1) : T(0); } };
struct Ge { template <class T> LOOM_HD T operator()(T a, T b) const { return a >= b ? T(1) : T(0); } };
struct Lt { template <class T> LOOM_HD T operator()(T a, T b) const { return a < b ? T(1) : T(0); } };
struct Le { template <class T> LOOM_HD T operator()(T a, T b) const { return a <= b ? T(1) : T(0); } };

}  // namespace loom::fn

namespace loom {

// Call visit(functor) with the functor of a runtime op code. Backends use them to
// turn the op enum into a template argument once per kernel call.
template <class Visit>
decltype(auto) visit_unary(UnaryOp op, Visit&& visit) {
  switch (op) {
    case UnaryOp::neg: return visit(fn::Neg{});
    case UnaryOp::exp: return visit(fn::Exp{});
    case UnaryOp::log: return visit(fn::Log{});
    case UnaryOp::sqrt: return visit(fn::Sqrt{});
    case UnaryOp::rsqrt: return visit(fn::Rsqrt{});
    case UnaryOp::tanh: return visit(fn::Tanh{});
    case UnaryOp::sigmoid: return visit(fn::Sigmoid{});
    case UnaryOp::relu: return visit(fn::Relu{});
    case UnaryOp::squared_relu: return visit(fn::SquaredRelu{});
    case UnaryOp::elu: return visit(fn::Elu{});
    case UnaryOp::gelu: return visit(fn::Gelu{});
    case UnaryOp::pow_scalar: return visit(fn::PowScalar{});
    case UnaryOp::gelu_grad: return visit(fn::GeluGrad{});
    case UnaryOp::abs: return visit(fn::Abs{});
  }
  return visit(fn::Neg{});
}

template <class Visit>
decltype(auto) visit_binary(BinaryOp op, Visit&& visit) {
  switch (op) {
    case BinaryOp::add: return visit(fn::Add{});
    case BinaryOp::sub: return visit(fn::Sub{});
    case BinaryOp::mul: return visit(fn::Mul{});
    case BinaryOp::div: return visit(fn::Div{});
    case BinaryOp::maximum: return visit(fn::Maximum{});
    case BinaryOp::minimum: return visit(fn::Minimum{});
    case BinaryOp::eq: return visit(fn::Eq{});
    case BinaryOp::gt: return visit(fn::Gt{});
    case BinaryOp::ge: return visit(fn::Ge{});
    case BinaryOp::lt: return visit(fn::Lt{});
    case BinaryOp::le: return visit(fn::Le{});
  }
  return visit(fn::Add{});
}

}  // namespace loom
