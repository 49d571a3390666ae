// delta_rule.cpp: backward rules (being written)
#include "autodiff/rules.h"
#include "engine/ops.h"

namespace loom::autodiff {

void register_delta_rule_rules(RuleTable&) {}

}  // namespace loom::autodiff
