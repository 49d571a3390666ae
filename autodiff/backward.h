// backward.h: reverse-mode differentiation of a recorded graph.
#pragma once

#include "engine/tensor.h"

namespace loom::autodiff {

// Accumulates d(root)/d(leaf), weighted by grad_output, into every leaf that
// requires grad and was used to compute root. Without retain_graph the data the
// graph kept for backward is freed on the way, and a second backward through the
// same graph is an error.
void backward(const Tensor& root, const Tensor& grad_output, bool retain_graph = false);

// Number of nodes reachable from t (for tests and debugging).
size_t graph_size(const Tensor& t);

}  // namespace loom::autodiff
