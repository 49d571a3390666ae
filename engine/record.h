// record.h: how an engine op tells autodiff what it did.
//
// The engine does not know about autodiff (autodiff/ sits above it). Instead,
// after an op computes its output it calls record(), which hands an OpRecord to
// a function that autodiff/ installs at start-up. With no function installed,
// with grad mode off, or when no input requires grad, nothing is recorded and
// the op costs nothing extra.
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

}  // namespace loom
