// bench_lstm: timings of the fused LSTM recurrence (not a test: nothing is
// asserted), beside the per-step composition of engine ops it replaced
// (tests/lstm_composed.h).
//
//   bench_lstm [L B H [composed_runs]]   default 450 64 256 3 (the paper's algorithmic tasks' layer)
//
// FLOPs counted: the recurrent products only, 8·B·H² per step forward (h W_hhᵀ),
// 16·B·H² per step backward (dG W_hh and dW_hh); the cells are not counted. Every
// timing is taken for 1 and 2 threads as the median and minimum wall time over the
// runs (after one warm-up run) and the minimum process CPU time.
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "autodiff/grad_mode.h"
#include "engine/backend.h"
#include "engine/device.h"
#include "engine/kernels/lstm.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/timing.h"
#include "tests/lstm_composed.h"

namespace {

using namespace loom;

using timing::measure;
using timing::Timing;

void print(const char* what, int threads, const Timing& t, double flops) {
  std::printf("  %-34s %d thr  wall median %9.2f ms (min %9.2f)  cpu min %9.2f ms  %6.1f GFLOP/s (median wall)\n",
              what, threads, t.wall_median * 1e3, t.wall_min * 1e3, t.cpu_min * 1e3, flops / t.wall_median * 1e-9);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t L = 450, B = 64, H = 256;
  int composed_runs = 3;
  if (argc == 4 || argc == 5) {
    L = std::atol(argv[1]);
    B = std::atol(argv[2]);
    H = std::atol(argv[3]);
    if (argc == 5) composed_runs = std::atoi(argv[4]);
  } else if (argc != 1) {
    std::fprintf(stderr, "usage: bench_lstm [L B H [composed_runs]]\n");
    return 2;
  }
  const double step_flops = 8.0 * static_cast<double>(B * H * H) * static_cast<double>(L);
  std::printf("lstm, L=%ld B=%ld H=%ld, float32: %.2f GFLOP forward, %.2f backward (recurrent products)\n", L, B, H,
              step_flops * 1e-9, 2 * step_flops * 1e-9);
  Generator gen(1);
  const Tensor gates_x = uniform({L, B, 4 * H}, -1.5, 1.5, gen);
  const Tensor weight_hh = uniform({4 * H, H}, -0.0625, 0.0625, gen), grad_h = uniform({L, B, H}, -1, 1, gen);
  const int runs = 7;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    // The kernels alone, on what a recorded forward saves.
    const Tensor h = Tensor::empty({L, B, H}), cell = Tensor::empty({L, B, H}), gates = Tensor::empty({L, B, 4 * H});
    const Tensor grad_gates_x = Tensor::empty({L, B, 4 * H}), grad_w = Tensor::empty({4 * H, H});
    auto kernel_forward = [&] {
      backend_for(gates_x).lstm({.gates_x = gates_x, .weight_hh = weight_hh, .h = h, .cell = cell, .gates = gates});
    };
    const Timing f = measure(runs, kernel_forward);
    const Timing b = measure(runs, [&] {
      backend_for(gates_x).lstm_backward({.grad_h = grad_h, .weight_hh = weight_hh, .h = h, .cell = cell,
                                          .gates = gates, .grad_gates_x = grad_gates_x, .grad_weight_hh = grad_w});
    });
    print("fused forward kernel", threads, f, step_flops);
    print("fused backward kernel", threads, b, 2 * step_flops);
    // Forward and backward through autodiff, as training runs them.
    auto train_step = [&](Tensor (*fn)(const Tensor&, const Tensor&)) {
      return [&, fn] {
        const Tensor gx = gates_x.detach().requires_grad_(), w = weight_hh.detach().requires_grad_();
        sum(fn(gx, w) * grad_h).backward();
      };
    };
    const Timing fused = measure(runs, train_step([](const Tensor& a, const Tensor& w) { return lstm(a, w); }));
    print("fused forward + backward", threads, fused, 3 * step_flops);
    if (composed_runs > 0) {
      // Per-step inputs, as the layer fed the composition (no slicing in the timed work).
      std::vector<Tensor> steps;
      for (int64_t t = 0; t < L; ++t) steps.push_back(contiguous(squeeze(narrow(gates_x, 0, t, 1), 0)));
      const Timing composed = measure(composed_runs, [&] {
        std::vector<Tensor> leaves;
        for (const Tensor& s : steps) leaves.push_back(s.detach().requires_grad_());
        const Tensor w = weight_hh.detach().requires_grad_();
        sum(stack(test::lstm_composed_steps(leaves, w), 0) * grad_h).backward();
      });
      print("composed forward + backward", threads, composed, 3 * step_flops);
      std::printf("  composed / fused (median wall): %.2f\n", composed.wall_median / fused.wall_median);
    }
  }
  return 0;
}
