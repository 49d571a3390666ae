#include "models/blocks/module.h"

#include "engine/error.h"
#include "engine/ops.h"

namespace loom::models {

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  LOOM_CHECK(t.defined(), "register_parameter: '", name, "' is undefined");
  t.requires_grad_();
  parameters_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  LOOM_CHECK(t.defined(), "register_buffer: '", name, "' is undefined");
  buffers_.emplace_back(name, t);
  return t;
}

void Module::register_module(const std::string& name, Module& child) { children_.emplace_back(name, &child); }

void Module::collect(const std::string& prefix, bool parameters, NamedTensors& out) const {
  // PyTorch's order: a module's own tensors first, then its children's.
  for (const auto& [name, t] : parameters ? parameters_ : buffers_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", parameters, out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", true, out);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

namespace {
// Points t's impl at `replacement`'s data: all copies of the handle follow.
void replace_data(const Tensor& t, const Tensor& replacement) {
  TensorImpl& impl = t.impl();
  impl.storage = replacement.storage();
  impl.offset = replacement.offset();
  impl.strides = replacement.strides();
  impl.dtype = replacement.dtype();
  impl.grad = nullptr;
}
}  // namespace

void Module::to(Device device) {
  for (auto& [name, t] : named_parameters()) replace_data(t, contiguous(t.detach().to(device)));
  for (auto& [name, t] : named_buffers()) replace_data(t, contiguous(t.detach().to(device)));
}

void Module::to(DType dtype) {
  for (auto& [name, t] : named_parameters()) replace_data(t, contiguous(t.detach().to(dtype)));
  for (auto& [name, t] : named_buffers()) replace_data(t, contiguous(t.detach().to(dtype)));
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

}  // namespace loom::models
