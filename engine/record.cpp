#include "engine/record.h"

namespace loom {

namespace {
RecordFn g_record_fn = nullptr;
thread_local bool t_grad_enabled = true;
}  // namespace

void set_record_fn(RecordFn fn) { g_record_fn = fn; }

bool is_grad_enabled() { return t_grad_enabled; }

GradModeGuard::GradModeGuard(bool enabled) : previous_(t_grad_enabled) { t_grad_enabled = enabled; }
GradModeGuard::~GradModeGuard() { t_grad_enabled = previous_; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_enabled || !g_record_fn) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!t_grad_enabled || !g_record_fn) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(OpRecord&& rec, const Tensor& output) { g_record_fn(std::move(rec), output); }

}  // namespace loom
