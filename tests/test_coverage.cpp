// test_coverage.cpp: every op in engine/op_list.h is tested, and every
// differentiable op has a backward rule and a gradient-checked case.
#include <doctest/doctest.h>

#include <set>

#include "autodiff/rules.h"
#include "tests/op_table.h"

namespace loom::test {

TEST_CASE("coverage: every op has a test case, every differentiable op a rule and a gradcheck") {
  std::set<OpId> tested, gradchecked;
  for (const OpCase& c : op_cases()) {
    tested.insert(c.op);
    if (c.gradcheck) gradchecked.insert(c.op);
  }
  for (int i = 0; i < kOpCount; ++i) {
    const OpId op = static_cast<OpId>(i);
    INFO("op: ", std::string(op_name(op)));
    CHECK_MESSAGE(tested.count(op), "no case in the op table");
    if (op_differentiable(op)) {
      const bool has_rule = autodiff::rule_for(op).fn != nullptr;
      CHECK_MESSAGE(has_rule, "no backward rule");
      CHECK_MESSAGE(gradchecked.count(op), "no gradient-checked case");
    } else {
      CHECK_MESSAGE(!gradchecked.count(op), "a case gradchecks an op marked not differentiable");
    }
  }
}

}  // namespace loom::test
