// bench_delta_rnn: timings of the fused Delta RNN recurrence (not a test:
// nothing is asserted), beside the fused delta rule at the same sizes.
//
//   bench_delta_rnn [L B H D]     default 256 8 8 64 (64 sequences of model-sized heads)
//
// The Delta RNN's recurrent part does the delta rule's work on a square fast
// weight (its query is softmax(y_{t-1})) plus a softmax per step, so the delta
// rule with Dk = Dv = D, run in the same process, is the yardstick: the ratio
// says what the recurrence itself costs. Every timing is taken for 1 and 2
// threads as the median and minimum wall time over the runs (after one warm-up
// run) and the minimum process CPU time (summed over threads). On a machine
// shared with other jobs the wall times spread widely; the CPU time shows what
// the code itself costs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <vector>

#include "autodiff/grad_mode.h"
#include "engine/backend.h"
#include "engine/device.h"
#include "engine/kernels/delta_rnn.h"
#include "engine/ops.h"
#include "engine/timing.h"

namespace {

using namespace loom;

using timing::measure;
using timing::Timing;

void print(const char* what, int threads, const Timing& t, double flops) {
  std::printf("  %-28s %d thr  wall median %8.2f ms (min %8.2f)  cpu min %8.2f ms  %6.1f GFLOP/s (median wall)\n",
              what, threads, t.wall_median * 1e3, t.wall_min * 1e3, t.cpu_min * 1e3, flops / t.wall_median * 1e-9);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t L = 256, B = 8, H = 8, D = 64;
  if (argc == 5) {
    L = std::atol(argv[1]);
    B = std::atol(argv[2]);
    H = std::atol(argv[3]);
    D = std::atol(argv[4]);
  } else if (argc != 1) {
    std::fprintf(stderr, "usage: bench_delta_rnn [L B H D]\n");
    return 2;
  }
  std::printf("delta_rnn vs delta_rule, L=%ld B=%ld H=%ld D=%ld, float32 (forward 6, backward 14 FLOPs per R "
              "element per step)\n",
              L, B, H, D);
  Generator gen(1);
  // Softmax-normalised keys, as the layer feeds them; gamma in (0, 1).
  const Tensor z = uniform({L, B, H, D}, -1, 1, gen), rk = softmax(uniform({L, B, H, D}, -2, 2, gen), -1);
  const Tensor rv = uniform({L, B, H, D}, -1, 1, gen), gamma = uniform({L, B, H, 1}, 0, 1, gen);
  const Tensor q = softmax(uniform({L, B, H, D}, -2, 2, gen), -1), g = uniform({L, B, H, D}, -1, 1, gen);
  const double elements = static_cast<double>(L * B * H * D * D);
  const int runs = 11;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    // The kernels alone, on what a recorded forward saves.
    Tensor y = Tensor::empty({L, B, H, D}), last = Tensor::empty({B, H, D, D}), vbar = Tensor::empty({L, B, H, D});
    Tensor gz = Tensor::empty(z.shape()), grk = Tensor::empty(rk.shape()), grv = Tensor::empty(rv.shape()),
           ggamma = Tensor::empty(gamma.shape());
    auto rnn_forward = [&] { backend_for(z).delta_rnn({.z = z, .rk = rk, .rv = rv, .gamma = gamma, .out = y, .final_R = last, .vbar = vbar}); };
    rnn_forward();
    const Timing rnn_f = measure(runs, rnn_forward);
    const Timing rnn_b = measure(runs, [&] {
      backend_for(z).delta_rnn_backward({.grad_out = g, .rk = rk, .rv = rv, .gamma = gamma, .out = y, .vbar = vbar,
                                         .final_R = last, .grad_z = gz, .grad_rk = grk, .grad_rv = grv,
                                         .grad_gamma = ggamma});
    });
    Tensor yq = Tensor::empty({L, B, H, D}), wq = Tensor::empty({B, H, D, D}), vq = Tensor::empty({L, B, H, D});
    Tensor gq = Tensor::empty(q.shape()), gk = Tensor::empty(q.shape()), gv = Tensor::empty(q.shape()),
           gb = Tensor::empty(gamma.shape());
    auto rule_forward = [&] { backend_for(q).delta_rule({.q = q, .k = rk, .v = rv, .beta = gamma, .out = yq, .final_state = wq, .vbar = vq}); };
    rule_forward();
    const Timing rule_f = measure(runs, rule_forward);
    const Timing rule_b =
        measure(runs, [&] { backend_for(q).delta_rule_backward({.grad_out = g, .q = q, .k = rk, .v = rv, .beta = gamma, .vbar = vq,
                                                  .final_state = wq, .grad_q = gq, .grad_k = gk, .grad_v = gv,
                                                  .grad_beta = gb}); });
    print("delta_rnn forward kernel", threads, rnn_f, 6 * elements);
    print("delta_rule forward kernel", threads, rule_f, 6 * elements);
    print("delta_rnn backward kernel", threads, rnn_b, 14 * elements);
    print("delta_rule backward kernel", threads, rule_b, 14 * elements);
    std::printf("  ratio delta_rnn / delta_rule (median wall): forward %.2f, backward %.2f\n",
                rnn_f.wall_median / rule_f.wall_median, rnn_b.wall_median / rule_b.wall_median);
  }
  return 0;
}
