// module.h: the base of every layer and model: named parameters and children.
//
// Names follow PyTorch's state_dict: a child registered as "attn" holding a
// parameter "weight" gives "attn.weight". The families register their children
// under labml's names, so named_parameters() is exactly the list of tensors a
// labml checkpoint holds (see models/FAMILIES.md §2.4, §3.4, §4.3).
//
// A Module owns its parameters as Tensor members; the registry keeps handles
// to the same tensors (a Tensor is a shared handle), so loading a checkpoint
// copies into them in place and every holder sees the new values.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace loom::models {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Parameters (trainable) in registration order, with dotted names.
  NamedTensors named_parameters() const;
  // Persistent buffers (saved in checkpoints, not trained), e.g. positional encodings.
  NamedTensors named_buffers() const;
  std::vector<Tensor> parameters() const;
  int64_t parameter_count() const;

  // Moves every parameter and buffer to `device` / converts it to `dtype` in
  // place: every handle onto them (optimizer state aside) sees the change.
  // Gradients are dropped. Used for CUDA training and float64 gradient checks.
  void to(Device device);
  void to(DType dtype);

  // Dropout is active only in training mode (the default).
  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

 protected:
  // Marks t as a parameter (requires grad) named `name`; returns it.
  Tensor register_parameter(const std::string& name, Tensor t);
  Tensor register_buffer(const std::string& name, Tensor t);
  // `child` must be a member of this module (or owned by it) and outlive it.
  void register_module(const std::string& name, Module& child);

 private:
  void collect(const std::string& prefix, bool parameters, NamedTensors& out) const;

  NamedTensors parameters_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, Module*>> children_;
  bool training_ = true;
};

}  // namespace loom::models
