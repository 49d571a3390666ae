// shape.cpp: backward rules of views and copies.
#include "autodiff/rules.h"
#include "engine/ops.h"

namespace loom::autodiff {

namespace {

using Grads = std::vector<Tensor>;

Grads reshape_rule(const Node& n, const Tensor& g) { return {reshape(g, n.edges[0].shape)}; }

// Undo the permutation: out axis i came from input axis perm[i].
Grads permute_rule(const Node& n, const Tensor& g) {
  return {permute(g, inverse_permutation(n.ints))};
}

// The slice's gradient lands in its window of a zero tensor.
Grads narrow_rule(const Node& n, const Tensor& g) {
  Tensor out = Tensor::zeros(n.edges[0].shape, g.dtype(), g.device());
  copy_(narrow(out, n.ints[0], n.ints[1], n.ints[2]), g);
  return {out};
}

// expand's gradient is g summed back to the input shape, and cast's is g cast
// back to the input dtype: backward() does both for every edge.
Grads identity_rule(const Node&, const Tensor& g) { return {g}; }

Grads concat_rule(const Node& n, const Tensor& g) {
  Grads grads;
  int64_t start = 0;
  for (size_t i = 1; i < n.ints.size(); ++i) {
    grads.push_back(narrow(g, n.ints[0], start, n.ints[i]));
    start += n.ints[i];
  }
  return grads;
}

Grads stack_rule(const Node& n, const Tensor& g) {
  Grads grads;
  const int64_t axis = n.ints[0];
  for (int64_t i = 0; i < g.size(axis); ++i) grads.push_back(squeeze(narrow(g, axis, i, 1), axis));
  return grads;
}

}  // namespace

void register_shape_rules(RuleTable& t) {
  t[int(OpId::reshape)] = Rule{reshape_rule, false, false};
  t[int(OpId::permute)] = Rule{permute_rule, false, false};
  t[int(OpId::narrow)] = Rule{narrow_rule, false, false};
  t[int(OpId::expand)] = Rule{identity_rule, false, false};
  t[int(OpId::contiguous)] = Rule{identity_rule, false, false};
  t[int(OpId::cast)] = Rule{identity_rule, false, false};
  t[int(OpId::concat)] = Rule{concat_rule, false, false};
  t[int(OpId::stack)] = Rule{stack_rule, false, false};
}

}  // namespace loom::autodiff
