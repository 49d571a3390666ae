// backend.h: the kernels a device must provide.
//
// Ops (engine/ops/*.cpp) check their arguments, allocate the output on the
// input's device and then call one of these kernels on backend_for(device).
//
// The kernels are declared once, in LOOM_KERNELS below: one line per kernel,
// its name and its parameters. That list becomes the pure virtual methods of
// Backend and the overriding declarations of every backend (CpuBackend in
// engine/cpu/, CudaBackend in cuda/), so a new kernel is one line here plus
// its definition in each backend; a backend that lacks a definition does not
// link (undefined reference to `CudaBackend::name(...)`). There are no
// default implementations.
//
// Conventions: outputs are allocated by the caller (contiguous unless a kernel
// says otherwise); inputs may be strided views; shapes are already checked.
#pragma once

#include <cstddef>
#include <type_traits>
#include <vector>

#include "engine/allocator.h"
#include "engine/tensor.h"

namespace loom {

enum class UnaryOp {
  neg, exp, log, sqrt, rsqrt, tanh, sigmoid, relu, squared_relu, elu, gelu,
  pow_scalar,  // x^param
  gelu_grad,   // d gelu / dx, for the backward rule
  abs,
};
const char* unary_op_name(UnaryOp op);

enum class BinaryOp { add, sub, mul, div, maximum, minimum, eq, gt, ge, lt, le };
const char* binary_op_name(BinaryOp op);

enum class ReduceOp { sum, max, argmax };

enum class RandomKind { uniform, normal, bernoulli };

// Scaled dot-product attention options (the attention kernels below).
struct AttentionArgs {
  double scale = 1.0;
  bool causal = false;  // query i sees keys j <= Lk - Lq + i
  double dropout_p = 0.0;
  uint64_t seed = 0, offset = 0;
};

// KERNEL(name, (parameters)): every kernel returns void. Comments are /* */
// because the list is one macro.
#define LOOM_KERNELS(KERNEL)                                                                                  \
  /* ---- elementwise (cpu/elementwise.cpp, cuda/elementwise.cu) ---------------------------------------- */ \
  /* out may be strided */                                                                                     \
  KERNEL(fill, (const Tensor& out, double value))                                                              \
  /* same shape; casts; dst may be strided */                                                                  \
  KERNEL(copy, (const Tensor& src, const Tensor& dst))                                                         \
  /* the ops of elementwise_functors.h; param: elu's alpha, pow's exponent */                                  \
  KERNEL(unary, (UnaryOp op, const Tensor& x, const Tensor& out, double param))                                \
  /* a and b are already broadcast to out's shape (stride-0 views where broadcast) */                          \
  KERNEL(binary, (BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out))                           \
  /* out = cond != 0 ? a : b; all three broadcast to out's shape */                                            \
  KERNEL(where, (const Tensor& cond, const Tensor& a, const Tensor& b, const Tensor& out))                      \
                                                                                                               \
  /* ---- reduce (cpu/reduce.cpp, cuda/reduce.cu) ----------------------------------------------------------- */ \
  /* out has x's shape with every axis in `axes` set to 1. argmax takes one axis and writes int64 indices. */  \
  KERNEL(reduce, (ReduceOp op, const Tensor& x, const std::vector<int>& axes, const Tensor& out))             \
                                                                                                               \
  /* ---- linalg (cpu/linalg.cpp, cuda/linalg.cu) ------------------------------------------------------------ */ \
  /* a [batch..., M, K] · b [batch..., K, N] -> out [batch..., M, N]. Batch dims are equal (broadcast views   \
     allowed). a and b may be transposed views of contiguous matrices: kernels pass that to GEMM as a flag    \
     instead of copying. */                                                                                    \
  KERNEL(matmul, (const Tensor& a, const Tensor& b, const Tensor& out))                                        \
                                                                                                               \
  /* ---- softmax, losses, norm: all over the last axis, x contiguous (cpu/, cuda/ softmax and norm) -------- */ \
  KERNEL(softmax, (const Tensor& x, const Tensor& out, bool log))                                              \
  KERNEL(softmax_backward, (const Tensor& y, const Tensor& grad_y, const Tensor& grad_x, bool log))             \
  /* losses[i] = logsumexp(logits[i]) - logits[i, targets[i]]; logits [N, C], targets int64 [N]. */            \
  KERNEL(cross_entropy, (const Tensor& logits, const Tensor& targets, const Tensor& losses))                    \
  /* grad_logits[i] = (softmax(logits[i]) - onehot(targets[i])) * grad_losses[i]. */                           \
  KERNEL(cross_entropy_backward, (const Tensor& logits, const Tensor& targets, const Tensor& grad_losses,       \
                                  const Tensor& grad_logits))                                                   \
  /* weight/bias may be undefined (no affine). mean, rstd: [rows] in x's dtype. */                             \
  KERNEL(layer_norm, (const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& out, \
                      const Tensor& mean, const Tensor& rstd))                                                  \
  /* grad_weight/grad_bias may be undefined when not needed. */                                                \
  KERNEL(layer_norm_backward, (const Tensor& grad_out, const Tensor& x, const Tensor& weight,                  \
                               const Tensor& mean, const Tensor& rstd, const Tensor& grad_x,                    \
                               const Tensor& grad_weight, const Tensor& grad_bias))                             \
                                                                                                               \
  /* ---- index (cpu/index.cpp, cuda/index.cu) -------------------------------------------------------------- */ \
  /* out = x.index_select(axis, ids): ids int64 1-D, already range-checked. */                                 \
  KERNEL(index_select, (const Tensor& x, int axis, const Tensor& ids, const Tensor& out))                       \
  /* target.index(axis, ids[i]) += src.index(axis, i); duplicates accumulate. */                               \
  KERNEL(index_add, (const Tensor& target, int axis, const Tensor& ids, const Tensor& src))                     \
  /* out[..i..] = x[..ids[..i..]..] along axis (torch.gather); ids has out's shape. */                         \
  KERNEL(gather, (const Tensor& x, int axis, const Tensor& ids, const Tensor& out))                            \
  /* target[..ids[..i..]..] += src[..i..] along axis (torch.scatter_add_). */                                  \
  KERNEL(scatter_add, (const Tensor& target, int axis, const Tensor& ids, const Tensor& src))                  \
                                                                                                               \
  /* ---- conv (cpu/conv.cpp, cuda/conv.cu) ------------------------------------------------------------------ */ \
  /* Depth-wise causal conv along axis 0: x [L, ..., C], weight [Cw, K], bias [Cw] or undefined, Cw = C or 1   \
     (one kernel shared by all channels):                                                                      \
     out[t, .., c] = bias[c] + sum_k weight[c, k] * x[t - (K-1) + k, .., c], x[<0] = 0. */                    \
  KERNEL(causal_conv1d, (const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out))        \
  /* grad_weight/grad_bias are overwritten; any of the three outputs may be undefined. */                      \
  KERNEL(causal_conv1d_backward, (const Tensor& grad_out, const Tensor& x, const Tensor& weight,               \
                                  const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias))    \
                                                                                                               \
  /* ---- attention (cpu/attention.cpp, cuda/attention.cu) -------------------------------------------------- */ \
  /* Scaled dot-product attention per (batch, head): q [Lq, B, H, D], k [Lk, B, H, D], v [Lk, B, H, Dv] with  \
     unit stride on the last axis (other strides free). out [Lq, B, H, Dv] and lse [B, H, Lq] are            \
     contiguous; lse receives each row's logsumexp of the scaled (masked) scores, all the backward needs to   \
     rebuild the probabilities. Dropout keeps element (b, h, i, j) of the probabilities when Philox word      \
     e % 4 of counter offset + e / 4, e = ((b·H + h)·Lq + i)·Lk + j, read as uint_to_unit, is below           \
     1 - dropout_p; kept ones are scaled by 1/(1 - p). */                                                      \
  KERNEL(attention, (const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args,             \
                     const Tensor& out, const Tensor& lse))                                                    \
  /* grad_q, grad_k, grad_v are contiguous with q's, k's, v's shapes and overwritten. */                       \
  KERNEL(attention_backward, (const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,       \
                              const Tensor& lse, const AttentionArgs& args, const Tensor& grad_q,              \
                              const Tensor& grad_k, const Tensor& grad_v))                                      \
                                                                                                               \
  /* ---- delta_rule (cpu/delta_rule.cpp, cuda/delta_rule.cu) ----------------------------------------------- */ \
  /* The fast-weight recurrence (ops.h) over contiguous q, k [L, B, H, Dk], v [L, B, H, Dv], beta             \
     [L, B, H, 1] (undefined: the sum rule) and initial_state [B, H, Dv, Dk] (undefined: zeros). Writes out   \
     [L, B, H, Dv]; final_state [B, H, Dv, Dk] (W_L) and vbar [L, B, H, Dv] (W_{t-1} k_t, delta rule only)    \
     when defined. */                                                                                          \
  KERNEL(delta_rule, (const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta,                   \
                      const Tensor& initial_state, const Tensor& out, const Tensor& final_state,               \
                      const Tensor& vbar))                                                                     \
  /* Gradients of q, k, v, beta (all contiguous, grad_beta undefined for the sum rule) from grad_out, the     \
     inputs, and what the forward saved: vbar and final_state = W_L, from which the kernel rebuilds every W_t \
     backwards. */                                                                                             \
  KERNEL(delta_rule_backward, (const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,      \
                               const Tensor& beta, const Tensor& vbar, const Tensor& final_state,               \
                               const Tensor& grad_q, const Tensor& grad_k, const Tensor& grad_v,               \
                               const Tensor& grad_beta))                                                       \
                                                                                                               \
  /* ---- feedback (cpu/feedback.cpp, cuda/feedback.cu) ----------------------------------------------------- */ \
  /* One step of attention over the memory (see feedback_attention in ops.h). q, P, s, u contiguous;          \
     keys/values [n, B, H, *] with unit stride on the last axis (any other strides). out [B, H, Dv]; lse      \
     [B, H] receives each row's log-sum-exp of the scores. */                                                  \
  KERNEL(feedback_attention, (const Tensor& q, const Tensor& keys, const Tensor& values, const Tensor& P,      \
                              const Tensor& s, const Tensor& u, double scale, const Tensor& out,               \
                              const Tensor& lse))                                                              \
  /* grad_out, out, lse contiguous. grad_q, grad_keys, grad_values are overwritten (contiguous); grad_P,      \
     grad_s, grad_u are accumulated into (zero them first). Undefined outputs are skipped. */                  \
  KERNEL(feedback_attention_backward, (const Tensor& grad_out, const Tensor& q, const Tensor& keys,           \
                                       const Tensor& values, const Tensor& P, const Tensor& s,                 \
                                       const Tensor& u, const Tensor& out, const Tensor& lse, double scale,    \
                                       const Tensor& grad_q, const Tensor& grad_keys,                          \
                                       const Tensor& grad_values, const Tensor& grad_P, const Tensor& grad_s,  \
                                       const Tensor& grad_u))                                                  \
                                                                                                               \
  /* ---- random (cpu/random.cpp, cuda/random.cu) ---------------------------------------------------------- */ \
  /* Element i uses Philox counter offset + i/4 (word i%4): the same numbers on every device and thread      \
     count. uniform: [a, b); normal: mean a, std b; bernoulli: p = a. */                                      \
  KERNEL(random, (RandomKind kind, const Tensor& out, double a, double b, uint64_t seed, uint64_t offset))

class Backend {
 public:
  using AttentionArgs = loom::AttentionArgs;

  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual Allocator& allocator() = 0;
  // Memory moves between the host and this device's memory (memcpy on the CPU).
  virtual void copy_from_host(void* dst, const void* src, size_t bytes);
  virtual void copy_to_host(void* dst, const void* src, size_t bytes);
  virtual void synchronize() {}

#define LOOM_KERNEL_PURE_VIRTUAL(name, params) virtual void name params = 0;
  LOOM_KERNELS(LOOM_KERNEL_PURE_VIRTUAL)
#undef LOOM_KERNEL_PURE_VIRTUAL
};

// Inside a backend's class: declares its definition of every kernel above.
#define LOOM_KERNEL_OVERRIDE(name, params) void name params override;
#define LOOM_BACKEND_KERNELS LOOM_KERNELS(LOOM_KERNEL_OVERRIDE)

// ---- helpers for ops and kernels of every backend ------------------------------

// t itself when undefined or contiguous, else a contiguous copy made by the
// backend of t's device. Not recorded: for ops and kernels that need dense memory.
Tensor dense(const Tensor& t);

// t's elements, or nullptr for an undefined (optional) tensor.
template <class T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<std::remove_const_t<T>>() : nullptr;
}

// How the causal_conv1d kernels see their operands: x as [L, B, C] with the
// middle axes folded into B, weight [C or 1, K].
struct ConvDims {
  int64_t L = 0, B = 1, C = 0, K = 0;
  bool shared = false;  // weight [1, K]: one kernel for all channels
};
inline ConvDims conv_dims(const Tensor& x, const Tensor& weight) {
  ConvDims d;
  d.L = x.shape().front();
  d.C = x.shape().back();
  for (int64_t i = 1; i + 1 < x.dim(); ++i) d.B *= x.shape()[i];
  d.K = weight.shape()[1];
  d.shared = weight.shape()[0] == 1 && d.C != 1;
  return d;
}

// The backend that owns `device`'s memory and kernels.
Backend& backend_for(Device device);
inline Backend& backend_for(const Tensor& t) { return backend_for(t.device()); }

// Defined in cuda/ when the CUDA backend is built; returns nullptr otherwise.
Backend* cuda_backend();

}  // namespace loom
