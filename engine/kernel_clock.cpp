#include "engine/kernel_clock.h"

namespace loom {

namespace {

std::atomic<bool> clock_on{false};
std::atomic<int64_t> nanoseconds[kKernelKinds];
// 1 while the calling thread runs a counted kernel.
thread_local int timed_depth = 0;

}  // namespace

const char* kernel_kind_name(KernelKind kind) {
  switch (kind) {
    case KernelKind::gemm: return "GEMM";
    case KernelKind::attention: return "attention";
    case KernelKind::recurrence: return "recurrence";
  }
  return "?";
}

void set_kernel_clock(bool on) {
  for (auto& ns : nanoseconds) ns.store(0, std::memory_order_relaxed);
  clock_on.store(on, std::memory_order_relaxed);
}

bool kernel_clock_on() { return clock_on.load(std::memory_order_relaxed); }

double kernel_clock_seconds(KernelKind kind) {
  return static_cast<double>(nanoseconds[static_cast<int>(kind)].load(std::memory_order_relaxed)) * 1e-9;
}

TimedKernel::TimedKernel(KernelKind kind) : kind_(kind) {
  if (!clock_on.load(std::memory_order_relaxed) || timed_depth > 0) return;
  counting_ = true;
  timed_depth = 1;
  start_ = std::chrono::steady_clock::now();
}

TimedKernel::~TimedKernel() {
  if (!counting_) return;
  timed_depth = 0;
  const auto elapsed = std::chrono::steady_clock::now() - start_;
  nanoseconds[static_cast<int>(kind_)].fetch_add(
      std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count(), std::memory_order_relaxed);
}

}  // namespace loom
