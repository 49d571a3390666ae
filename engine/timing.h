// timing.h: how loom's benchmark programs time a piece of work (tests/bench_*.cpp,
// examples/bench_*.cpp).
//
// measure(): one warm-up call (the allocator's cache, page faults), then `runs`
// timed calls: the median and minimum wall time, and the minimum CPU time of the
// process (all threads together), which a loaded machine disturbs least.
#pragma once

#include <time.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace loom::timing {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The middle value (the mean of the two middle ones for an even count); v non-empty.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

inline double cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

struct Timing {
  double wall_median = 0, wall_min = 0, cpu_min = 0;  // seconds
};

inline Timing measure(int runs, const std::function<void()>& f) {
  f();
  std::vector<double> wall, cpu;
  for (int r = 0; r < runs; ++r) {
    const auto t0 = Clock::now();
    const double c0 = cpu_seconds();
    f();
    cpu.push_back(cpu_seconds() - c0);
    wall.push_back(seconds_since(t0));
  }
  return {median(wall), *std::min_element(wall.begin(), wall.end()), *std::min_element(cpu.begin(), cpu.end())};
}

}  // namespace loom::timing
