// rules.h: the table of backward rules, one per differentiable op.
//
// Each stem file (elementwise.cpp, reduce.cpp, ...) fills in the rules of its
// ops; read together they are loom's list of derivatives.
#pragma once

#include <array>

#include "autodiff/node.h"

namespace loom::autodiff {

using RuleTable = std::array<Rule, kOpCount>;

// The rule of `op` (fn == nullptr when the op has none).
const Rule& rule_for(OpId op);

// One registration function per stem file.
void register_elementwise_rules(RuleTable& table);
void register_reduce_rules(RuleTable& table);
void register_linalg_rules(RuleTable& table);
void register_softmax_rules(RuleTable& table);
void register_norm_rules(RuleTable& table);
void register_index_rules(RuleTable& table);
void register_shape_rules(RuleTable& table);
void register_random_rules(RuleTable& table);
void register_conv_rules(RuleTable& table);
void register_attention_rules(RuleTable& table);
void register_delta_rule_rules(RuleTable& table);
void register_feedback_rules(RuleTable& table);

}  // namespace loom::autodiff
