#include "autodiff/rules.h"

namespace loom::autodiff {

namespace {
RuleTable build_table() {
  RuleTable table{};
  register_elementwise_rules(table);
  register_reduce_rules(table);
  register_linalg_rules(table);
  register_softmax_rules(table);
  register_norm_rules(table);
  register_index_rules(table);
  register_shape_rules(table);
  register_random_rules(table);
  register_conv_rules(table);
  register_attention_rules(table);
  register_delta_rule_rules(table);
  register_feedback_rules(table);
  return table;
}
}  // namespace

const Rule& rule_for(OpId op) {
  static const RuleTable table = build_table();
  return table[static_cast<int>(op)];
}

}  // namespace loom::autodiff
