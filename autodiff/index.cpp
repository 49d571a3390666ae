// index.cpp: backward rules of embedding, index_select and gather.
//
// Each op copies elements picked by ids, so the input's gradient sends every
// element of the output gradient back to the slot it was copied from: added into
// zeros, where repeated ids accumulate (index_add / scatter_add). The ids are
// saved[0] (already flattened for embedding); ints[0] is the axis.
#include "autodiff/rules.h"
#include "engine/backend.h"
#include "engine/ops.h"

namespace loom::autodiff {

namespace {

using Grads = std::vector<Tensor>;

// Row ids[i] of the weight gets the gradient of output row i.
Grads embedding_rule(const Node& n, const Tensor& g) {
  const Tensor& ids = n.saved[0];
  const Shape& shape = n.edges[0].shape;
  Tensor grad = Tensor::zeros(shape, g.dtype(), g.device());
  backend_for(g).index_add(grad, 0, ids, reshape(g, {ids.numel(), shape[1]}));
  return {grad};
}

Grads index_select_rule(const Node& n, const Tensor& g) {
  Tensor grad = Tensor::zeros(n.edges[0].shape, g.dtype(), g.device());
  backend_for(g).index_add(grad, static_cast<int>(n.ints[0]), n.saved[0], g);
  return {grad};
}

Grads gather_rule(const Node& n, const Tensor& g) {
  Tensor grad = Tensor::zeros(n.edges[0].shape, g.dtype(), g.device());
  backend_for(g).scatter_add(grad, static_cast<int>(n.ints[0]), n.saved[0], g);
  return {grad};
}

}  // namespace

void register_index_rules(RuleTable& t) {
  t[int(OpId::embedding)] = Rule{embedding_rule, false, false};
  t[int(OpId::index_select)] = Rule{index_select_rule, false, false};
  t[int(OpId::gather)] = Rule{gather_rule, false, false};
}

}  // namespace loom::autodiff
