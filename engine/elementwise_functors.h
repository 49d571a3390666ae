// elementwise_functors.h: the elementwise ops, one table row each.
//
// First the math: each op is a small struct with operator()(x, param) or
// operator()(a, b). The CPU loops (engine/cpu/elementwise.cpp) and the CUDA
// kernels (cuda/elementwise.cu) instantiate the same functors, so both devices
// compute the same expression and the CPU-vs-CUDA tests check indexing rather
// than math.
//
// Then the tables, one row per op. Everything else is generated from them:
//   the OpId of each op (engine/op_list.h), the UnaryOp / BinaryOp codes the
//   kernels take and their names (engine/backend.h), the dispatch from a code
//   to its functor (visit_unary / visit_binary, instantiated by the CPU loops
//   and the CUDA kernels), the public functions (engine/ops/elementwise.cpp;
//   their declarations are in engine/ops.h) and the backward rules.
// This header includes nothing of loom but host_device.h and vector_math.h
// (itself plain arithmetic), so that op_list.h can read the tables.
#pragma once

#include <cmath>

#include "engine/host_device.h"
#include "engine/vector_math.h"

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
struct Elu {  // param = alpha; vmath's expm1 and select, so that a loop over floats vectorizes
  template <class T> LOOM_HD T operator()(T x, T alpha) const {
    return vmath::select(x > T(0), x, alpha * vmath::expm1(x));
  }
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
struct Silu {  // x * sigmoid(x) (SiLU, swish)
  template <class T> LOOM_HD T operator()(T x, T) const { return x * Sigmoid{}(x, T(0)); }
};
struct SiluGrad {  // d/dx [x s(x)] = s(x) (1 + x (1 - s(x))), s = sigmoid
  template <class T> LOOM_HD T operator()(T x, T) const {
    const T s = Sigmoid{}(x, T(0));
    return s * (T(1) + x * (T(1) - s));
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

// ---- backward kernels: operator()(g, x), the gradient of an activation's input ----
// Each is its rule's composition of engine ops in one pass, the same operations in
// the same order (so the same bits): relu's g * gt(x, 0) made a mask tensor and
// then a product; squared_relu's g * relu(x) * 2.0 three passes.
struct ReluBackward {
  template <class T> LOOM_HD T operator()(T g, T x) const { return g * Gt{}(x, T(0)); }
};
struct SquaredReluBackward {
  template <class T> LOOM_HD T operator()(T g, T x) const { return g * Relu{}(x, T(0)) * T(2); }
};

}  // namespace loom::fn

// ---- the tables ---------------------------------------------------------------------
//
// Unary ops, X(name, Functor, keeps, grad):
//   name     the op: OpId::name, UnaryOp::name, and Tensor name(const Tensor& x)
//   Functor  its struct above
//   keeps    what the backward reads, so the graph keeps it alive: x (the input),
//            y (the output), xy (both) or none
//   grad     the gradient of x, an expression of engine ops on g (the output's
//            gradient), x, y and p (the op's parameter, 0 when it has none)
#define LOOM_UNARY_OPS(X)                                             \
  X(neg,          Neg,         none, neg(g))                          \
  X(exp,          Exp,         y,    g * y)                           \
  X(log,          Log,         x,    g / x)                           \
  X(sqrt,         Sqrt,        y,    g * 0.5 / y)                     \
  /* d/dx x^(-1/2) = -1/2 x^(-3/2) = -1/2 y^3 */                      \
  X(rsqrt,        Rsqrt,       y,    g * pow(y, 3.0) * -0.5)          \
  X(tanh,         Tanh,        y,    g * (1.0 - y * y))               \
  X(sigmoid,      Sigmoid,     y,    g * y * (1.0 - y))               \
  X(relu,         Relu,        x,    kernel::relu_backward(g, x))     \
  X(squared_relu, SquaredRelu, x,    kernel::squared_relu_backward(g, x)) \
  X(silu,         Silu,        x,    g * kernel::silu_grad(x))        \
  X(gelu,         Gelu,        x,    g * kernel::gelu_grad(x))

// Unary ops with a parameter p (recorded as reals[0]); the same columns. Their
// public functions are written out in ops/elementwise.cpp (default arguments).
#define LOOM_UNARY_OPS_WITH_PARAM(X)                                                              \
  /* elu'(x) = 1 for x > 0, alpha e^x = elu(x) + alpha otherwise */                               \
  X(elu,          Elu,         xy,   g * where(gt(x, 0.0), Tensor::scalar(1.0, x.dtype(), x.device()), y + p)) \
  X(pow_scalar,   PowScalar,   x,    g * pow(x, p - 1.0) * p)

// Unary kernels that are not ops: helpers of the backward rules, callable there
// as kernel::name(x). X(name, Functor).
#define LOOM_UNARY_KERNELS(X) \
  X(gelu_grad, GeluGrad)      \
  X(silu_grad, SiluGrad)      \
  X(abs,       Abs)

// Binary ops with numpy broadcasting, X(name, Functor, keeps, grad_a, grad_b):
// keeps is ab (both inputs) or none; each gradient is computed only when its
// input needs one. The walker sums broadcast gradients back to the inputs' shapes.
#define LOOM_BINARY_OPS(X)                                                  \
  X(add,     Add,     none, g,                g)                            \
  X(sub,     Sub,     none, g,                neg(g))                       \
  X(mul,     Mul,     ab,   g * b,            g * a)                        \
  X(div,     Div,     ab,   g / b,            neg(g / b * a / b))           \
  /* the gradient goes to the larger input (to a on ties, as the forward) */ \
  X(maximum, Maximum, ab,   g * ge(a, b),     g * (1.0 - ge(a, b)))         \
  X(minimum, Minimum, ab,   g * le(a, b),     g * (1.0 - le(a, b)))

// Binary kernels that are not ops: the backward kernels above, callable in the
// rules as kernel::name(g, x). X(name, Functor).
#define LOOM_BINARY_KERNELS(X)                    \
  X(relu_backward,         ReluBackward)          \
  X(squared_relu_backward, SquaredReluBackward)

// Comparisons: 1 or 0 in a's dtype, not differentiable, all recorded as
// OpId::compare. X(name, Functor).
#define LOOM_COMPARE_OPS(X) \
  X(eq, Eq)                 \
  X(gt, Gt)                 \
  X(ge, Ge)                 \
  X(lt, Lt)                 \
  X(le, Le)
