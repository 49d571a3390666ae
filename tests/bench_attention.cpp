// bench_attention: timings of the fused attention kernels (not a test: nothing
// is asserted), at the transformers' size by default.
//
//   bench_attention [L B H D [dropout]]   default 256 32 8 64 0.1 (transformer.json's layer), causal
//
// FLOPs counted: the products only, over the keys each query sees (about half of
// them under the causal mask): 2·(D + Dv) per visible pair forward (scores and
// outputs), 2·(3·D + 2·Dv) backward (scores rebuilt, dP, dV, dQ, dK). The softmax
// and dropout work is not counted. Every timing is taken for 1 and 2 threads as
// the median and minimum wall time over the runs (after one warm-up run) and the
// minimum process CPU time.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>

#include "engine/backend.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/timing.h"

namespace {

using namespace loom;

using timing::measure;
using timing::Timing;

void print(const char* what, int threads, const Timing& t, double flops) {
  std::printf("  %-20s %d thr  wall median %8.2f ms (min %8.2f)  cpu min %8.2f ms  %6.1f GFLOP/s (median wall)\n", what,
              threads, t.wall_median * 1e3, t.wall_min * 1e3, t.cpu_min * 1e3, flops / t.wall_median * 1e-9);
}

// text as a whole number, or as a real; false when it is not one entirely.
bool parse(const char* text, int64_t& out) {
  char* end = nullptr;
  out = std::strtoll(text, &end, 10);
  return end != text && *end == '\0';
}
bool parse(const char* text, double& out) {
  char* end = nullptr;
  out = std::strtod(text, &end);
  return end != text && *end == '\0';
}

}  // namespace

int main(int argc, char** argv) {
  int64_t L = 256, B = 32, H = 8, D = 64;
  double dropout = 0.1;
  const char* usage = "usage: bench_attention [L B H D [dropout]]: positive sizes, dropout in [0, 1)\n";
  if (argc != 1 && argc != 5 && argc != 6) {
    std::fprintf(stderr, "%s", usage);
    return 2;
  }
  if (argc >= 5) {
    const bool ok = parse(argv[1], L) && parse(argv[2], B) && parse(argv[3], H) && parse(argv[4], D) &&
                    (argc == 5 || parse(argv[5], dropout));
    if (!ok || L <= 0 || B <= 0 || H <= 0 || D <= 0 || !(dropout >= 0 && dropout < 1)) {
      std::fprintf(stderr, "%s", usage);
      return 2;
    }
  }
  const double visible = static_cast<double>(B * H) * static_cast<double>(L) * static_cast<double>(L + 1) / 2;
  const double forward_flops = 2.0 * (D + D) * visible, backward_flops = 2.0 * (3 * D + 2 * D) * visible;
  std::printf("attention, causal, L=%ld B=%ld H=%ld D=%ld dropout %.2f, float32: %.2f GFLOP forward, %.2f backward\n",
              L, B, H, D, dropout, forward_flops * 1e-9, backward_flops * 1e-9);
  try {
    Generator gen(1);
    const Tensor q = uniform({L, B, H, D}, -1, 1, gen), k = uniform({L, B, H, D}, -1, 1, gen);
    const Tensor v = uniform({L, B, H, D}, -1, 1, gen), grad = uniform({L, B, H, D}, -1, 1, gen);
    AttentionArgs args;
    args.scale = 1.0 / std::sqrt(static_cast<double>(D));
    args.causal = true;
    args.dropout_p = dropout;
    args.seed = 7;
    const Tensor out = Tensor::empty({L, B, H, D}), lse = Tensor::empty({B, H, L});
    const Tensor grad_q = Tensor::empty({L, B, H, D}), grad_k = Tensor::empty({L, B, H, D});
    const Tensor grad_v = Tensor::empty({L, B, H, D});
    const int runs = 9;
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      Backend& backend = backend_for(q);
      const Timing f = measure(runs, [&] { backend.attention(q, k, v, args, out, lse); });
      const Timing b =
          measure(runs, [&] { backend.attention_backward(grad, q, k, v, lse, args, grad_q, grad_k, grad_v); });
      print("forward kernel", threads, f, forward_flops);
      print("backward kernel", threads, b, backward_flops);
    }
  } catch (const std::exception& e) {  // e.g. sizes too large for memory
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 1;
  }
  return 0;
}
