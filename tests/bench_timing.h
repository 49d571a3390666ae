// bench_timing.h: how the benchmark binaries of tests/ time a piece of work.
//
// One warm-up call (the allocator's cache, page faults), then `runs` timed calls:
// the median and minimum wall time, and the minimum CPU time of the process
// (all threads together), which a loaded machine disturbs least.
#pragma once

#include <time.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace loom::timing {

struct Timing {
  double wall_median = 0, wall_min = 0, cpu_min = 0;  // seconds
};

inline double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

inline Timing measure(int runs, const std::function<void()>& f) {
  f();
  std::vector<double> wall, cpu;
  for (int r = 0; r < runs; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = cpu_seconds();
    f();
    cpu.push_back(cpu_seconds() - c0);
    wall.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(wall.begin(), wall.end());
  return {wall[wall.size() / 2], wall.front(), *std::min_element(cpu.begin(), cpu.end())};
}

}  // namespace loom::timing
