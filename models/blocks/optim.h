// optim.h: Adam in labml's and PyTorch's forms, learning-rate schedules, and
// global-norm gradient clipping (models/FAMILIES.md §1.5, §1.6).
//
// With t the parameter's own step count (from 1), g its gradient:
//   m ← β1·m + (1−β1)·g,   v ← β2·v + (1−β2)·g²
//   labml   (default): θ ← θ − lr_t · √(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + eps)
//   pytorch          : θ ← θ − lr_t / (1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps)
// The forms differ only in where eps goes: labml adds it to the un-corrected √v.
// Weight decay (0 by default) is decoupled: θ ← θ·(1 − lr·wd) before the update,
// with lr the configured rate in the labml form (labml's WeightDecay) and the
// scheduled lr_t in the pytorch form (torch.optim.AdamW).
//
// A parameter whose grad is undefined is skipped entirely: its step count does
// not advance and its moments are not touched, as in PyTorch and labml (the fast
// weights model has LayerNorms that never receive a gradient).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "engine/tensor.h"

namespace loom::models {

enum class AdamForm { labml, pytorch };

// lr_t as a function of the step t (from 1).
struct LrSchedule {
  enum class Kind { constant, noam };
  Kind kind = Kind::constant;
  double lr = 1e-3;
  int64_t d_model = 512;  // noam only
  int64_t warmup = 2000;  // noam only

  static LrSchedule constant(double lr) { return {Kind::constant, lr, 0, 0}; }
  // lr · d_model^(−1/2) · min(t^(−1/2), t·warmup^(−3/2)) (labml's Noam).
  static LrSchedule noam(double lr, int64_t d_model, int64_t warmup) { return {Kind::noam, lr, d_model, warmup}; }
  double at(int64_t step) const;
};

struct AdamOptions {
  AdamForm form = AdamForm::labml;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  // Contiguous float CPU parameters are updated by one fused loop (no temporaries);
  // false forces the composition of engine ops used on other devices (tests compare them).
  bool fused_cpu = true;
};

class Adam {
 public:
  // `params`: (name, tensor) pairs, e.g. model.named_parameters(); the names key
  // the exported state. Names must be unique.
  Adam(NamedTensors params, AdamOptions options, LrSchedule schedule);

  // One update of every parameter that has a grad (under NoGradGuard, in place).
  void step();
  // Drops every parameter's grad (backward() then allocates fresh ones).
  void zero_grad();

  // The rate the latest step used (at the largest per-parameter step count), or
  // the rate the next step will use before any step.
  double current_lr() const;
  // The largest per-parameter step count.
  int64_t steps_taken() const;
  const AdamOptions& options() const { return options_; }
  const LrSchedule& schedule() const { return schedule_; }

  // The state as PyTorch names it, per parameter that has state:
  //   "<name>.exp_avg", "<name>.exp_avg_sq" (the parameter's shape and dtype),
  //   "<name>.step" (int64 scalar, shape []).
  // The tensors are the live state (no copy): save them, do not modify them.
  NamedTensors state_tensors() const;
  // Replaces the state with `state` (from state_tensors()); checks every name,
  // shape and dtype first and lists every problem in one error, changing nothing.
  // Parameters absent from `state` start fresh (step 0), as they would have.
  void load_state_tensors(const NamedTensors& state);

 private:
  struct Slot {
    std::string name;
    Tensor param;
    Tensor exp_avg, exp_avg_sq;  // undefined until the first step
    int64_t step = 0;
  };
  void update(Slot& slot, const Tensor& grad);

  std::vector<Slot> slots_;
  AdamOptions options_;
  LrSchedule schedule_;
};

// torch.nn.utils.clip_grad_norm_: with `norm` the L2 norm of all grads together,
// every grad is scaled by min(1, max_norm / (norm + 1e-6)). Parameters without a
// grad are skipped. Returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace loom::models
