// backward.cpp: turning op records into nodes, and walking the nodes backwards.
#include "autodiff/backward.h"

#include <unordered_map>
#include <unordered_set>

#include "autodiff/node.h"
#include "engine/ops.h"
#include "engine/record.h"

namespace loom::autodiff {

namespace {

// ---- recording -----------------------------------------------------------------------

Edge edge_to(const Tensor& t) {
  Edge e;
  if (!t.defined()) return e;
  e.dtype = t.dtype();
  if (!t.requires_grad()) return e;
  if (t.grad_fn()) e.node = t.grad_fn();
  else e.leaf = t.impl_ptr();
  return e;
}

void record_node(OpRecord&& rec, const Tensor& output) {
  const Rule& rule = rule_for(rec.op);
  LOOM_CHECK(rule.fn != nullptr, "autodiff: op '", op_name(rec.op), "' has no backward rule");
  auto node = std::make_shared<Node>();
  node->op = rec.op;
  for (const Tensor& in : rec.inputs) {
    node->edges.push_back(edge_to(in));
    node->input_shapes.push_back(in.defined() ? in.shape() : Shape{});
    node->input_needs_grad.push_back(node->edges.back().active());
  }
  auto keep = [&](const Tensor& t) {
    if (!t.defined()) return Tensor();
    node->versions.push_back(t.storage()->version);
    return t.detach();
  };
  if (rule.needs_inputs)
    for (const Tensor& in : rec.inputs) node->inputs.push_back(keep(in));
  if (rule.needs_output) node->output = keep(output);
  for (const Tensor& s : rec.saved) node->saved.push_back(keep(s));
  node->ints = std::move(rec.ints);
  node->reals = std::move(rec.reals);
  output.impl().grad_fn = std::move(node);
  output.impl().requires_grad = true;
}

// Installed before main() runs (the library is linked whole, see meson.build).
const bool g_installed = (set_record_fn(&record_node), true);

// ---- the backward walk -----------------------------------------------------------------

void check_versions(const Node& node) {
  size_t k = 0;
  auto check = [&](const Tensor& t) {
    if (!t.defined()) return;
    const uint64_t now = t.storage()->version, then = node.versions[k++];
    LOOM_CHECK(now == then, "backward of '", op_name(node.op), "': a tensor it saved (", t.describe(),
               ") was modified in place after the forward (version ", now, ", expected ", then,
               "); clone it before writing to it");
  };
  for (const Tensor& t : node.inputs) check(t);
  check(node.output);
  for (const Tensor& t : node.saved) check(t);
}

void release(Node& node) {
  node.inputs.clear();
  node.output = Tensor();
  node.saved.clear();
  node.versions.clear();
  node.released = true;
}

// True when no other tensor shares t's storage: writing into it changes nothing else.
bool exclusive(const Tensor& t) {
  return t.storage().use_count() == 1 && t.impl_ptr().use_count() == 1 && t.is_contiguous() && t.offset() == 0;
}

// A gradient we may keep: not sharing storage with anything else, so that an
// in-place update of one leaf's grad can never change another's.
Tensor owned(const Tensor& g) { return exclusive(g) ? g : clone(g); }

// slot += g for a gradient still on its way to its node. In place when the slot's
// buffer is its own (a sum made here, or a rule's fresh result): a tensor read at
// every step of a recurrence, such as a feedback layer's weights, then takes its
// L contributions into one buffer instead of a new buffer of its size for each.
// The same kernel adds either way, so the bits are the same.
void add_into(Tensor& slot, const Tensor& g) {
  if (!slot.defined()) slot = g;
  else if (exclusive(slot) && slot.shape() == g.shape() && slot.dtype() == g.dtype()) add_(slot, g);
  else slot = add(slot, g);
}

void accumulate_leaf(TensorImpl& leaf, const Tensor& g) {
  if (leaf.grad) {
    Tensor sum = add(Tensor(leaf.grad), g);
    leaf.grad = sum.impl_ptr();
  } else {
    leaf.grad = owned(g).impl_ptr();
  }
}

// For a rule with an add_into form (engine/record.h): adds the node's gradient
// into its one input's running sum in place, when that input comes from a node
// whose sum exists and may be written. False when it cannot: then the rule's fn runs.
bool add_into_running_sum(const Node& node, const Rule& rule, const Tensor& grad,
                          std::unordered_map<Node*, Tensor>& grads) {
  if (node.edges.size() != 1 || !node.edges[0].node || grad.dtype() != node.edges[0].dtype) return false;
  auto it = grads.find(node.edges[0].node.get());
  if (it == grads.end()) return false;
  const Tensor& sum = it->second;
  if (!exclusive(sum) || sum.shape() != node.input_shapes[0] || sum.dtype() != grad.dtype()) return false;
  rule.add_into(node, grad, sum);
  return true;
}

// Nodes reachable from `root`, each listed after every node that consumes it.
std::vector<Node*> topological_order(Node* root) {
  // Iterative DFS (feedback and delta-rule graphs can be thousands of nodes deep).
  std::vector<Node*> order;
  std::unordered_set<Node*> visited{root};
  std::vector<std::pair<Node*, size_t>> stack{{root, 0}};
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    if (next < node->edges.size()) {
      Node* child = node->edges[next++].node.get();
      if (child && visited.insert(child).second) stack.push_back({child, 0});
    } else {
      order.push_back(node);
      stack.pop_back();
    }
  }
  return {order.rbegin(), order.rend()};  // consumers before producers
}

}  // namespace

void backward(const Tensor& root, const Tensor& grad_output, bool retain_graph) {
  LOOM_CHECK(root.requires_grad(), "backward: the tensor does not require grad (",
             root.describe(), "): no input of its computation required grad, or it was computed under NoGradGuard");
  LOOM_CHECK(grad_output.shape() == root.shape() && grad_output.dtype() == root.dtype(),
             "backward: gradient ", grad_output.describe(), " does not match the tensor ", root.describe());
  GradModeGuard no_grad(false);
  if (!root.grad_fn()) {  // a leaf: its gradient is grad_output itself
    accumulate_leaf(root.impl(), grad_output);
    return;
  }
  std::unordered_map<Node*, Tensor> grads;
  grads[root.grad_fn().get()] = grad_output;
  for (Node* node : topological_order(root.grad_fn().get())) {
    auto it = grads.find(node);
    if (it == grads.end()) continue;  // nothing flows into this node
    const Tensor grad = std::move(it->second);
    grads.erase(it);
    LOOM_CHECK(!node->released, "backward of '", op_name(node->op),
               "': the graph was already freed by an earlier backward; pass retain_graph=true to the first one");
    check_versions(*node);
    const Rule& rule = rule_for(node->op);
    if (rule.add_into && add_into_running_sum(*node, rule, grad, grads)) {
      if (!retain_graph) release(*node);
      continue;
    }
    std::vector<Tensor> input_grads = rule.fn(*node, grad);
    LOOM_CHECK(input_grads.size() <= node->edges.size(), "backward rule of '", op_name(node->op), "' returned ",
               input_grads.size(), " gradients for ", node->edges.size(), " inputs");
    for (size_t i = 0; i < input_grads.size(); ++i) {
      const Edge& edge = node->edges[i];
      if (!edge.active() || !input_grads[i].defined()) continue;
      Tensor g = std::move(input_grads[i]);
      g = sum_to(g, node->input_shapes[i]);  // undo broadcasting, once, here
      if (g.dtype() != edge.dtype) g = cast(g, edge.dtype);
      if (edge.node) {
        add_into(grads[edge.node.get()], g);
      } else {
        accumulate_leaf(*edge.leaf, g);
      }
    }
    if (!retain_graph) release(*node);
  }
}

Node::~Node() {
  std::vector<std::shared_ptr<Node>> pending;
  for (Edge& e : edges)
    if (e.node) pending.push_back(std::move(e.node));
  while (!pending.empty()) {
    std::shared_ptr<Node> node = std::move(pending.back());
    pending.pop_back();
    // Only the last owner takes the node's producers over, so each is freed once.
    if (node.use_count() == 1)
      for (Edge& e : node->edges)
        if (e.node) pending.push_back(std::move(e.node));
  }
}

size_t graph_size(const Tensor& t) {
  return t.grad_fn() ? topological_order(t.grad_fn().get()).size() : 0;
}

}  // namespace loom::autodiff

namespace loom {

// Declared in engine/tensor.h; defined here because only autodiff can walk the graph.
void Tensor::backward(bool retain_graph) const {
  LOOM_CHECK(numel() == 1, "backward: called on a tensor with ", numel(),
             " elements; give the gradient explicitly, or reduce it to a scalar first (",
             describe(), ")");
  autodiff::backward(*this, Tensor::ones(shape(), dtype(), device()), retain_graph);
}

void Tensor::backward(const Tensor& grad_output, bool retain_graph) const {
  autodiff::backward(*this, grad_output, retain_graph);
}

}  // namespace loom
