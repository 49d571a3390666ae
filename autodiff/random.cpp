// random.cpp: the backward rule of dropout (the saved mask is 0 or 1/(1-p)).
#include "autodiff/rules.h"
#include "engine/ops.h"

namespace loom::autodiff {

namespace {
std::vector<Tensor> dropout_rule(const Node& n, const Tensor& g) { return {g * n.saved[0]}; }
}  // namespace

void register_random_rules(RuleTable& t) { t[int(OpId::dropout)] = Rule{dropout_rule, false, false}; }

}  // namespace loom::autodiff
