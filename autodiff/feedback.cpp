// feedback.cpp: backward rules (being written)
#include "autodiff/rules.h"
#include "engine/ops.h"

namespace loom::autodiff {

void register_feedback_rules(RuleTable&) {}

}  // namespace loom::autodiff
