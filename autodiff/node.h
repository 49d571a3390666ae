// node.h: one recorded op in the autodiff graph.
//
// When an op runs on tensors that require grad, engine/record.h hands autodiff
// an OpRecord and autodiff turns it into a Node hung on the output
// (output.grad_fn()). A Node is the RecordedOp its backward rule reads
// (engine/record.h: only the data the rule asks for, so a graph does not keep
// every activation alive) plus the graph around it:
//   - one Edge per input: where that input's gradient goes (the node that made
//     it, or the leaf tensor that accumulates it), plus the input's dtype, so
//     the gradient can be cast back (the shape is RecordedOp::input_shapes);
//   - the storage versions of what was kept, to detect in-place writes.
#pragma once

#include <memory>
#include <vector>

#include "engine/record.h"

namespace loom::autodiff {

struct Node;

struct Edge {
  std::shared_ptr<Node> node;        // the input was made by this node, or...
  std::shared_ptr<TensorImpl> leaf;  // ...the input is a leaf that requires grad
  DType dtype = DType::f32;          // the input's dtype: gradients are cast back to it
  bool active() const { return node || leaf; }
};

struct Node : RecordedOp {
  std::vector<Edge> edges;        // one per input, in call order
  // Storage versions of what was kept, to detect in-place writes before backward.
  std::vector<uint64_t> versions;
  bool released = false;          // data freed after a backward without retain_graph

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  // Frees the chain of producers iteratively: a long recurrence (one node per
  // token per layer) would otherwise recurse once per node and overflow the stack.
  ~Node();
};

}  // namespace loom::autodiff
