// record.h: how an op tells autodiff what it did, and how its backward rule
// reads it back.
//
// The engine does not know about autodiff's graph (autodiff/ sits above it).
// Instead, after an op computes its output it calls record(), which hands an
// OpRecord to a function that autodiff/ installs at start-up. With no function
// installed, with grad mode off, or when no input requires grad, nothing is
// recorded and the op costs nothing extra.
//
// Each differentiable op registers its backward rule beside its forward, in
// its engine/ops/<stem>.cpp file (RuleRegistration below). A rule reads a
// RecordedOp: the data the forward kept for it.
#pragma once

#include <initializer_list>
#include <vector>

#include "engine/op_list.h"
#include "engine/tensor.h"

namespace loom {

// What the backward rule of an op gets to see besides the output's gradient.
struct OpRecord {
  OpId op;
  std::vector<Tensor> inputs;   // the op's tensor inputs, in call order
  std::vector<Tensor> saved;    // extra tensors the forward computed for the backward
  std::vector<int64_t> ints;    // integer attributes: axes, sizes, flags
  std::vector<double> reals;    // real attributes: eps, p, exponent
};

using RecordFn = void (*)(OpRecord&& record, const Tensor& output);
void set_record_fn(RecordFn fn);

// Grad mode is per thread and on by default; GradModeGuard switches it for a scope.
bool is_grad_enabled();
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled);
  ~GradModeGuard();
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool previous_;
};

// True when recording is on and at least one of `inputs` requires grad.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Records `output` as made by the op in `record` (call only when needs_grad).
void record(OpRecord&& record, const Tensor& output);

// ---- backward rules ------------------------------------------------------------------

// What a backward rule reads: the op's record, with the tensors the rule asked
// to keep (detached). autodiff's graph node extends it with its edges.
struct RecordedOp {
  OpId op{};
  std::vector<Tensor> inputs;      // the inputs (only if the rule keeps them)
  Tensor output;                   // the output (only if the rule keeps it)
  std::vector<Tensor> saved;       // the extra tensors of the record
  std::vector<int64_t> ints;
  std::vector<double> reals;
  std::vector<Shape> input_shapes;      // every input's shape, kept always
  std::vector<bool> input_needs_grad;   // whether a gradient flows to input i

  bool needs_input_grad(size_t i) const { return i < input_needs_grad.size() && input_needs_grad[i]; }
  const Tensor& input(size_t i) const { return inputs.at(i); }
};

// A backward rule: given what the op recorded and the gradient of its output,
// return one gradient per input (undefined where not needed). Rules use engine
// ops and run with grad mode off (no higher-order gradients). Returned gradients
// may have a broadcast shape: the backward pass sums them to the input's shape
// (the one place that happens) and casts them to the input's dtype.
using Grads = std::vector<Tensor>;
using RuleFn = Grads (*)(const RecordedOp& op, const Tensor& grad_output);

// A second form of a rule, for ops of one input whose gradient is mostly zeros
// around grad_output (narrow: a slice's gradient is zero outside its window):
// add the op's gradient for input 0 into `sum`, the running sum of that input's
// gradient, in place. The backward walk calls it instead of fn when such a sum
// already exists, has the input's shape and dtype, and shares its buffer with
// nothing, so that splitting a projection into k slices makes one zero buffer
// instead of k, and adds k windows instead of k - 1 whole tensors. The sums are
// those fn's result would have made inside the window; outside it the sum is left
// as it is, where adding fn's zeros would only turn a -0 into +0.
using AddIntoFn = void (*)(const RecordedOp& op, const Tensor& grad_output, const Tensor& sum);

struct Rule {
  RuleFn fn = nullptr;
  bool needs_inputs = false;  // keep the inputs' data for the rule
  bool needs_output = false;  // keep the output's data for the rule
  AddIntoFn add_into = nullptr;  // optional, see AddIntoFn
};

// The rule of `op` (fn == nullptr when the op has none).
const Rule& rule_for(OpId op);

// Registers the rule of `op` while the program starts (the library is linked
// whole): `const RuleRegistration r(OpId::exp, {exp_rule, false, true});`
// beside the op's forward. Registering an op twice is an error.
struct RuleRegistration {
  RuleRegistration(OpId op, Rule rule);
};

// ---- watching which ops run (for tests) -------------------------------------------------

// Recorded ops can be read off the graph (output.grad_fn()->op). The ops that
// never record (comparisons, argmax, random fills, in-place writes) report the
// tensor they wrote through ran() instead, so that tests/test_coverage.cpp can
// see which op a test case ran. Nothing happens unless a test installed a
// watcher: the cost is one thread-local load and branch per call.
using OpWatcher = void (*)(OpId op, const Tensor& output);
// Installs `watcher` for this thread (nullptr removes it); returns the previous one.
OpWatcher set_op_watcher(OpWatcher watcher);
void ran(OpId op, const Tensor& output);

}  // namespace loom
