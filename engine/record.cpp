#include "engine/record.h"

#include <array>

namespace loom {

namespace {
RecordFn g_record_fn = nullptr;
thread_local bool t_grad_enabled = true;
thread_local OpWatcher t_watcher = nullptr;

// Filled by the RuleRegistrations of engine/ops/*.cpp before main() runs; a
// function-local static, so it exists before the first registration.
std::array<Rule, kOpCount>& rule_table() {
  static std::array<Rule, kOpCount> table{};
  return table;
}
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

const Rule& rule_for(OpId op) { return rule_table()[static_cast<int>(op)]; }

RuleRegistration::RuleRegistration(OpId op, Rule rule) {
  Rule& slot = rule_table()[static_cast<int>(op)];
  LOOM_CHECK(slot.fn == nullptr, "op '", op_name(op), "' has two backward rules");
  LOOM_CHECK(op_differentiable(op), "op '", op_name(op), "' is listed as not differentiable but has a backward rule");
  slot = rule;
}

OpWatcher set_op_watcher(OpWatcher watcher) {
  const OpWatcher previous = t_watcher;
  t_watcher = watcher;
  return previous;
}

void ran(OpId op, const Tensor& output) {
  if (t_watcher) t_watcher(op, output);
}

}  // namespace loom
