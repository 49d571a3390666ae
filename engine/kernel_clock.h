// kernel_clock.h: where the time of a CPU step goes, by kind of kernel.
//
// A benchmark (examples/bench_train.cpp) switches the clock on; every CPU kernel
// of a timed kind then adds its wall time to that kind's total, and the rest of a
// step is what is left. Switched off (the default) a timed kernel costs one
// relaxed atomic load. A kernel timed while another timed kernel runs on the same
// thread (an op built from others) is not counted again: the outermost one counts.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace loom {

enum class KernelKind { gemm, attention, recurrence };
inline constexpr int kKernelKinds = 3;
const char* kernel_kind_name(KernelKind kind);  // "GEMM", "attention", "recurrence"

// Switching on also sets every total to zero.
void set_kernel_clock(bool on);
bool kernel_clock_on();
double kernel_clock_seconds(KernelKind kind);

// Times the scope it lives in when the clock is on.
class TimedKernel {
 public:
  explicit TimedKernel(KernelKind kind);
  ~TimedKernel();
  TimedKernel(const TimedKernel&) = delete;
  TimedKernel& operator=(const TimedKernel&) = delete;

 private:
  KernelKind kind_;
  bool counting_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace loom
