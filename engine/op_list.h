// op_list.h: the list of loom's ops and the list of their kernels.
//
// The lists a new op is added to. Every op a user can call has one OpId. The
// elementwise ops come from the tables of elementwise_functors.h (one row
// each, which also generates their kernels' dispatch, their public functions
// and their backward rules); every other op appears below once, as
// LOOM_OP(name, differentiable). Together they
// generate the OpId enum and the op-name table, and the tests walk them:
// tests/test_coverage.cpp fails when an op has no test case, no CUDA parity
// case, or (differentiable ops) no backward rule. Below the ops, LOOM_KERNELS
// lists the kernels of every backend. engine/README.md walks through adding an
// op.
//
// Ops are grouped by "stem": the file names under engine/ops/ (the op and its
// backward rule), engine/cpu/ and cuda/ (its kernels) and tests/cases_*.cpp.
#pragma once

#include "engine/elementwise_functors.h"  // the elementwise tables

#define LOOM_OP_LIST(LOOM_OP)                                  \
  /* elementwise: the comparisons (eq, gt, ge, lt, le) -> 0/1 */ \
  LOOM_OP(compare, false)                                      \
  LOOM_OP(where, true)                                         \
  LOOM_OP(masked_fill, true)                                   \
  /* reduce */                                                 \
  LOOM_OP(sum, true)                                           \
  LOOM_OP(mean, true)                                          \
  LOOM_OP(max, true)                                           \
  LOOM_OP(argmax, false)                                       \
  LOOM_OP(logsumexp, true)                                     \
  /* linalg */                                                 \
  LOOM_OP(matmul, true)                                        \
  LOOM_OP(linear, true)                                        \
  LOOM_OP(step_weight, true)                                   \
  LOOM_OP(stepped_matmul, true)                                \
  /* softmax and losses */                                     \
  LOOM_OP(softmax, true)                                       \
  LOOM_OP(log_softmax, true)                                   \
  LOOM_OP(cross_entropy, true)                                 \
  /* norm */                                                   \
  LOOM_OP(layer_norm, true)                                    \
  /* index */                                                  \
  LOOM_OP(embedding, true)                                     \
  LOOM_OP(index_select, true)                                  \
  LOOM_OP(gather, true)                                        \
  /* shape: views and copies */                                \
  LOOM_OP(reshape, true)                                       \
  LOOM_OP(permute, true) /* transpose is a permute */          \
  LOOM_OP(narrow, true)                                        \
  LOOM_OP(expand, true)                                        \
  LOOM_OP(contiguous, true)                                    \
  LOOM_OP(cast, true)                                          \
  LOOM_OP(concat, true)                                        \
  LOOM_OP(stack, true)                                         \
  /* random */                                                 \
  LOOM_OP(uniform, false)                                      \
  LOOM_OP(normal, false)                                       \
  LOOM_OP(bernoulli, false)                                    \
  LOOM_OP(dropout, true)                                       \
  /* in place: never recorded (optimizers, initialisation) */  \
  LOOM_OP(copy_, false)                                        \
  LOOM_OP(fill_, false)                                        \
  LOOM_OP(add_, false)                                         \
  LOOM_OP(mul_, false)                                         \
  /* conv */                                                   \
  LOOM_OP(causal_conv1d, true)                                 \
  /* dpfp: the DPFP feature map of the fast weights */         \
  LOOM_OP(dpfp, true)                                          \
  /* sum_normalise: φ / (Σφ + eps), optionally φ = ELU + 1 */  \
  LOOM_OP(sum_normalise, true)                                 \
  /* attention: fused causal softmax attention */              \
  LOOM_OP(attention, true)                                     \
  /* delta_rule: the fast-weight recurrence */                 \
  LOOM_OP(delta_rule, true)                                    \
  /* delta_rnn: the Delta RNN's recurrent fast weight */       \
  LOOM_OP(delta_rnn, true)                                     \
  /* delta_lstm: the Delta LSTM's recurrence */                \
  LOOM_OP(delta_lstm, true)                                    \
  /* feedback: one step of attention over the memory */        \
  LOOM_OP(feedback_attention, true)                            \
  LOOM_OP(feedback_memory_append, true)                        \
  LOOM_OP(feedback_memory_attention, true)                     \
  /* recurrent_delta_net: the RDN's fused recurrence */        \
  LOOM_OP(recurrent_delta_net, true)                           \
  /* lstm: the LSTM recurrence over all steps */               \
  LOOM_OP(lstm, true)

namespace loom {
// The operands of the kernels that take one struct, declared in their kernel
// specs (engine/kernels/<stem>.h).
struct DeltaRuleArgs;
struct DeltaRuleBackwardArgs;
struct DeltaRnnArgs;
struct DeltaRnnBackwardArgs;
struct DeltaLstmArgs;
struct DeltaLstmBackwardArgs;
struct RecurrentDeltaNetArgs;
struct RecurrentDeltaNetBackwardArgs;
struct FeedbackAttentionArgs;
struct FeedbackAttentionBackwardArgs;
struct FeedbackMemoryGradientArgs;
struct LstmArgs;
struct LstmBackwardArgs;
}  // namespace loom

// The kernels, KERNEL(name, (parameters)), grouped by the same stems: the
// methods every backend implements (engine/backend.h turns the list into
// Backend's pure virtual methods and each backend's declarations). Every kernel
// returns void. The types are those of engine/backend.h, where the list is
// expanded. Comments are /* */ because the list is one macro.
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
  /* out += a · b, the same operands (out contiguous): linear starts out from its bias. */                     \
  KERNEL(matmul_add, (const Tensor& a, const Tensor& b, const Tensor& out))                                    \
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
  /* ---- dpfp (cpu/dpfp.cpp, cuda/dpfp.cu) ------------------------------------------------------------------ */ \
  /* x contiguous [rows, n] (any leading axes merged), out contiguous [rows, 2n·nu], 1 <= nu <= 2n-1: with     \
     r = relu([x, -x]), out[row, (i-1)·2n + j] = r[j] · r[(j - i) mod 2n] for i = 1..nu, j < 2n. */             \
  KERNEL(dpfp, (const Tensor& x, int64_t nu, const Tensor& out))                                               \
  /* grad_x (contiguous, overwritten) from grad_out [rows, 2n·nu] and x [rows, n], r recomputed from x. */     \
  KERNEL(dpfp_backward, (const Tensor& grad_out, const Tensor& x, int64_t nu, const Tensor& grad_x))           \
                                                                                                               \
  /* ---- sum_normalise (cpu/sum_normalise.cpp, cuda/sum_normalise.cu) ---------------------------------- */ \
  /* x [rows, n], read through its strides (copied when n's is not 1): e = x (or ELU(x) + 1 with elu_plus_one), \
     den [rows] = Σ e + eps, out = e / den (kernels/sum_normalise.h). features receives e when given         \
     (elu_plus_one only); out, den contiguous. */                                                             \
  KERNEL(sum_normalise, (const Tensor& x, double eps, bool elu_plus_one, const Tensor& out,                    \
                         const Tensor& features, const Tensor& denominator))                                   \
  /* grad_x (contiguous, overwritten) from grad_out, the kept features e and den. */                           \
  KERNEL(sum_normalise_backward, (const Tensor& grad_out, const Tensor& features, const Tensor& denominator,    \
                                  bool elu_plus_one, const Tensor& grad_x))                                     \
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
  /* ---- the fused recurrences: operands, layouts and step math in engine/kernels/<stem>.h ------------- */ \
  KERNEL(delta_rule, (const DeltaRuleArgs& args))                                                              \
  KERNEL(delta_rule_backward, (const DeltaRuleBackwardArgs& args))                                             \
  KERNEL(delta_rnn, (const DeltaRnnArgs& args))                                                                \
  KERNEL(delta_rnn_backward, (const DeltaRnnBackwardArgs& args))                                               \
  KERNEL(delta_lstm, (const DeltaLstmArgs& args))                                                              \
  KERNEL(delta_lstm_backward, (const DeltaLstmBackwardArgs& args))                                             \
  KERNEL(recurrent_delta_net, (const RecurrentDeltaNetArgs& args))                                             \
  KERNEL(recurrent_delta_net_backward, (const RecurrentDeltaNetBackwardArgs& args))                            \
                                                                                                               \
  /* ---- feedback: one step of attention over the memory; operands in engine/kernels/feedback.h ---------- */ \
  KERNEL(feedback_attention, (const FeedbackAttentionArgs& args))                                              \
  KERNEL(feedback_attention_backward, (const FeedbackAttentionBackwardArgs& args))                             \
  KERNEL(feedback_memory_gradient, (const FeedbackMemoryGradientArgs& args))                                   \
                                                                                                               \
  /* ---- lstm (engine/kernels/lstm.h: arguments and cell math; cpu/lstm.cpp, cuda/lstm.cu) ---------- */ \
  KERNEL(lstm, (const LstmArgs& args))                                                                         \
  KERNEL(lstm_backward, (const LstmBackwardArgs& args))                                                        \
                                                                                                               \
  /* ---- random (cpu/random.cpp, cuda/random.cu) ---------------------------------------------------------- */ \
  /* Element i uses Philox counter offset + i/4 (word i%4): the same numbers on every device and thread      \
     count. uniform: [a, b); normal: mean a, std b; bernoulli: p = a. */                                      \
  KERNEL(random, (RandomKind kind, const Tensor& out, double a, double b, uint64_t seed, uint64_t offset))      \
  /* out = a(x) * mask / (1 - p), mask_i = 1 where element i's word keeps it as bernoulli(1 - p) would, the  \
     mask drawn in the kernel; a is ReLU (x > 0 ? x : 0) when relu_first, else the identity. keep_bits, when   \
     defined (int64, contiguous, ceil(numel / 64) words), receives the mask as bits: bit j of word w is 1      \
     where element 64·w + j is kept, bits past the last element 0. x and out contiguous, of one dtype and      \
     numel; out may be x. */                                                                                   \
  KERNEL(dropout, (const Tensor& x, const Tensor& out, double p, uint64_t seed, uint64_t offset,               \
                   const Tensor& keep_bits, bool relu_first))                                                  \
  /* Dropout's backward: out = grad_out * mask / (1 - p) with the mask read from keep_bits as dropout wrote    \
     it, then times (x > 0 ? 1 : 0) when relu_input x is defined; the products of the composition (a dropped  \
     element is multiplied by 0, not skipped). grad_out, relu_input and out contiguous, of one dtype and      \
     numel; out may be grad_out. */                                                                            \
  KERNEL(dropout_backward, (const Tensor& grad_out, const Tensor& keep_bits, double p, const Tensor& relu_input, \
                            const Tensor& out))

namespace loom {

// Applies ELEMENTWISE to every row of the elementwise tables (all
// differentiable; the comparisons are one op, compare, in LOOM_OP_LIST), then
// M(name, differentiable) to LOOM_OP_LIST.
#define LOOM_FOR_EACH_OP(ELEMENTWISE, M)                                         \
  LOOM_UNARY_OPS(ELEMENTWISE) LOOM_UNARY_OPS_WITH_PARAM(ELEMENTWISE) LOOM_BINARY_OPS(ELEMENTWISE) \
  LOOM_OP_LIST(M)

enum class OpId {
#define LOOM_OP_ENUM(name, ...) name,
  LOOM_FOR_EACH_OP(LOOM_OP_ENUM, LOOM_OP_ENUM)
#undef LOOM_OP_ENUM
};

constexpr int kOpCount = 0
#define LOOM_OP_COUNT(name, ...) +1
    LOOM_FOR_EACH_OP(LOOM_OP_COUNT, LOOM_OP_COUNT)
#undef LOOM_OP_COUNT
    ;

inline const char* op_name(OpId op) {
  static const char* const names[] = {
#define LOOM_OP_NAME(name, ...) #name,
      LOOM_FOR_EACH_OP(LOOM_OP_NAME, LOOM_OP_NAME)
#undef LOOM_OP_NAME
  };
  static_assert(sizeof(names) / sizeof(names[0]) == kOpCount, "op-name table out of step");
  return names[static_cast<int>(op)];
}

inline bool op_differentiable(OpId op) {
  static const bool table[] = {
#define LOOM_OP_DIFF(name, differentiable) differentiable,
#define LOOM_ELEMENTWISE_DIFF(name, ...) true,
      LOOM_FOR_EACH_OP(LOOM_ELEMENTWISE_DIFF, LOOM_OP_DIFF)
#undef LOOM_OP_DIFF
#undef LOOM_ELEMENTWISE_DIFF
  };
  return table[static_cast<int>(op)];
}

}  // namespace loom
