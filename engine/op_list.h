// op_list.h: the single list of loom's ops.
//
// Every op a user can call appears here once, as LOOM_OP(name, differentiable).
// The list generates the OpId enum and the op-name table, and the tests walk it:
// tests/test_coverage.cpp fails when an op has no test case, or when a
// differentiable op has no backward rule. Adding an op starts with one line here
// (engine/README.md walks through the rest).
//
// Ops are grouped by "stem": the file names under engine/ops/, engine/cpu/ and
// autodiff/ that hold their forward, kernels and backward rule.
#pragma once

#define LOOM_OP_LIST(LOOM_OP)                                  \
  /* elementwise: unary */                                     \
  LOOM_OP(neg, true)                                           \
  LOOM_OP(exp, true)                                           \
  LOOM_OP(log, true)                                           \
  LOOM_OP(sqrt, true)                                          \
  LOOM_OP(rsqrt, true)                                         \
  LOOM_OP(tanh, true)                                          \
  LOOM_OP(sigmoid, true)                                       \
  LOOM_OP(relu, true)                                          \
  LOOM_OP(squared_relu, true)                                  \
  LOOM_OP(elu, true)                                           \
  LOOM_OP(gelu, true)                                          \
  LOOM_OP(pow_scalar, true)                                    \
  /* elementwise: binary, numpy broadcasting */                \
  LOOM_OP(add, true)                                           \
  LOOM_OP(sub, true)                                           \
  LOOM_OP(mul, true)                                           \
  LOOM_OP(div, true)                                           \
  LOOM_OP(maximum, true)                                       \
  LOOM_OP(minimum, true)                                       \
  LOOM_OP(compare, false) /* eq, gt, ge, lt, le -> 0/1 */      \
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
  LOOM_OP(dropout, true)                                       \
  /* conv */                                                   \
  LOOM_OP(causal_conv1d, true)                                 \
  /* attention: fused causal softmax attention */              \
  LOOM_OP(attention, true)                                     \
  /* delta_rule: the fast-weight recurrence */                 \
  LOOM_OP(delta_rule, true)                                    \
  /* feedback: one step of attention over the memory */        \
  LOOM_OP(feedback_attention, true)

namespace loom {

enum class OpId {
#define LOOM_OP_ENUM(name, differentiable) name,
  LOOM_OP_LIST(LOOM_OP_ENUM)
#undef LOOM_OP_ENUM
};

constexpr int kOpCount = 0
#define LOOM_OP_COUNT(name, differentiable) +1
    LOOM_OP_LIST(LOOM_OP_COUNT)
#undef LOOM_OP_COUNT
    ;

inline const char* op_name(OpId op) {
  static const char* const names[] = {
#define LOOM_OP_NAME(name, differentiable) #name,
      LOOM_OP_LIST(LOOM_OP_NAME)
#undef LOOM_OP_NAME
  };
  static_assert(sizeof(names) / sizeof(names[0]) == kOpCount, "op-name table out of step");
  return names[static_cast<int>(op)];
}

inline bool op_differentiable(OpId op) {
  static const bool table[] = {
#define LOOM_OP_DIFF(name, differentiable) differentiable,
      LOOM_OP_LIST(LOOM_OP_DIFF)
#undef LOOM_OP_DIFF
  };
  return table[static_cast<int>(op)];
}

}  // namespace loom
