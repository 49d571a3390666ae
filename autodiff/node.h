// node.h: one recorded op in the autodiff graph.
//
// When an op runs on tensors that require grad, engine/record.h hands autodiff
// an OpRecord and autodiff turns it into a Node hung on the output
// (output.grad_fn()). A Node keeps:
//   - one Edge per input: where that input's gradient goes (the node that made
//     it, or the leaf tensor that accumulates it), plus the input's shape so the
//     gradient can be summed back when the op broadcast it;
//   - only the data its backward rule asks for (inputs, output, extra saved
//     tensors), so a graph does not keep every activation alive by default.
#pragma once

#include <memory>
#include <vector>

#include "engine/op_list.h"
#include "engine/tensor.h"

namespace loom::autodiff {

struct Node;

struct Edge {
  std::shared_ptr<Node> node;        // the input was made by this node, or...
  std::shared_ptr<TensorImpl> leaf;  // ...the input is a leaf that requires grad
  Shape shape;                       // the input's shape
  DType dtype = DType::f32;          // and dtype: gradients are brought back to both
  bool active() const { return node || leaf; }
};

struct Node {
  OpId op;
  std::vector<Edge> edges;        // one per input, in call order
  std::vector<Tensor> inputs;     // detached inputs (only if the rule needs them)
  Tensor output;                  // detached output (only if the rule needs it)
  std::vector<Tensor> saved;      // detached extra tensors from the forward
  std::vector<int64_t> ints;
  std::vector<double> reals;
  // Storage versions of what was kept, to detect in-place writes before backward.
  std::vector<uint64_t> versions;
  bool released = false;          // data freed after a backward without retain_graph

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  // Frees the chain of producers iteratively: a long recurrence (one node per
  // token per layer) would otherwise recurse once per node and overflow the stack.
  ~Node();

  bool needs_input_grad(size_t i) const { return i < edges.size() && edges[i].active(); }
  const Tensor& input(size_t i) const { return inputs.at(i); }
};

// A backward rule: given the node and the gradient of its output, return one
// gradient per input (undefined where not needed). Rules use engine ops and run
// with grad mode off. Returned gradients may have a broadcast shape: the
// backward pass sums them to the input's shape (the one place that happens).
using RuleFn = std::vector<Tensor> (*)(const Node& node, const Tensor& grad_output);

struct Rule {
  RuleFn fn = nullptr;
  bool needs_inputs = false;  // keep the inputs' data for the rule
  bool needs_output = false;  // keep the output's data for the rule
};

}  // namespace loom::autodiff
