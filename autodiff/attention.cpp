// attention.cpp: backward rules (being written)
#include "autodiff/rules.h"
#include "engine/ops.h"

namespace loom::autodiff {

void register_attention_rules(RuleTable&) {}

}  // namespace loom::autodiff
