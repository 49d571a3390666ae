// linalg.cpp: the backward rule of matmul.
//
// C = A·B  =>  dA = dC·Bᵀ, dB = Aᵀ·dC. The transposes are views: GEMM reads them
// in place. Broadcast batch dims are summed away by the caller.
#include "autodiff/rules.h"
#include "engine/ops.h"

namespace loom::autodiff {

namespace {

std::vector<Tensor> matmul_rule(const Node& n, const Tensor& g) {
  const Tensor& a = n.input(0);
  const Tensor& b = n.input(1);
  return {n.needs_input_grad(0) ? matmul(g, transpose(b, -1, -2)) : Tensor(),
          n.needs_input_grad(1) ? matmul(transpose(a, -1, -2), g) : Tensor()};
}

}  // namespace

void register_linalg_rules(RuleTable& t) { t[int(OpId::matmul)] = Rule{matmul_rule, true, false}; }

}  // namespace loom::autodiff
