// reduce.cpp: backward rules of the reductions.
//
// A reduction records ints = {keepdim, axes...}. Its gradient is the output
// gradient with the reduced axes put back as size 1, broadcast over the input.
#include "autodiff/rules.h"
#include "engine/ops.h"

namespace loom::autodiff {

namespace {

using Grads = std::vector<Tensor>;

// t with the reduced axes restored as size-1 dims (a no-op when keepdim was set).
Tensor keepdim_view(const Node& n, const Tensor& t, const Shape& input_shape) {
  if (n.ints[0]) return t;
  Shape shape = input_shape;
  for (size_t i = 1; i < n.ints.size(); ++i) shape[n.ints[i]] = 1;
  return reshape(t, shape);
}

Grads sum_rule(const Node& n, const Tensor& g) {
  const Shape& shape = n.edges[0].shape;
  return {expand(keepdim_view(n, g, shape), shape)};
}

Grads mean_rule(const Node& n, const Tensor& g) {
  const Shape& shape = n.edges[0].shape;
  return {expand(keepdim_view(n, g, shape) / n.reals[0], shape)};
}

// Ties share the gradient equally (like torch.amax).
Grads max_rule(const Node& n, const Tensor& g) {
  const Tensor& x = n.input(0);
  const Tensor winners = eq(x, keepdim_view(n, n.output, x.shape()));
  std::vector<int64_t> axes(n.ints.begin() + 1, n.ints.end());
  const Tensor count = sum(winners, axes, true);
  return {winners * keepdim_view(n, g, x.shape()) / count};
}

// d logsumexp(x) / dx = softmax(x) = exp(x - logsumexp(x))
Grads logsumexp_rule(const Node& n, const Tensor& g) {
  const Tensor& x = n.input(0);
  return {exp(x - keepdim_view(n, n.output, x.shape())) * keepdim_view(n, g, x.shape())};
}

}  // namespace

void register_reduce_rules(RuleTable& t) {
  t[int(OpId::sum)] = Rule{sum_rule, false, false};
  t[int(OpId::mean)] = Rule{mean_rule, false, false};
  t[int(OpId::max)] = Rule{max_rule, true, true};
  t[int(OpId::logsumexp)] = Rule{logsumexp_rule, true, true};
}

}  // namespace loom::autodiff
