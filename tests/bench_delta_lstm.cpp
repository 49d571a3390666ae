// bench_delta_lstm: timings of the fused Delta LSTM recurrence beside the fused
// delta rule at the same head size (not a test: nothing is asserted).
//
//   bench_delta_lstm                      L 256, B 8, H 4, D 32 and 64
//   bench_delta_lstm L B H D              one size
//   bench_delta_lstm --composed [L B H D] also the step-by-step composition of engine ops
//
// Per step and sequence the Delta LSTM runs three delta-rule updates of D×D fast
// weights plus their read-outs, so about three delta rules' work: the ratio
// printed at the end of each size says what the fused kernels make of that.
// Timings are taken for 1 and 2 threads, as the median and minimum wall time over
// the runs (after one warm-up run) and the minimum process CPU time; on a machine
// shared with other jobs the wall times spread, the CPU time less so.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <vector>

#include "autodiff/grad_mode.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/timing.h"

namespace {

using namespace loom;

using timing::measure;
using timing::Timing;

void print(const char* what, int threads, const Timing& t, double tokens) {
  std::printf("  %-40s %d thr  wall median %8.2f ms (min %8.2f)  cpu min %8.2f ms  %9.0f tokens/s\n", what, threads,
              t.wall_median * 1e3, t.wall_min * 1e3, t.cpu_min * 1e3, tokens / t.wall_median);
}

// The recurrence with engine ops, one step at a time (every R_t kept for the backward).
Tensor composed(const Tensor& z, const Tensor& rk, const Tensor& rv, const Tensor& gamma) {
  const int64_t L = z.size(0), B = z.size(1), H = z.size(2), D = z.size(4);
  Tensor R = Tensor::zeros({B, H, 3, D, D}), h = Tensor::zeros({B, H, D}), c = Tensor::zeros({B, H, D});
  auto step = [](const Tensor& x, int64_t t) { return squeeze(narrow(x, 0, t, 1), 0); };
  auto gate = [](const Tensor& x, int64_t g) { return squeeze(narrow(x, 2, g, 1), 2); };
  std::vector<Tensor> hs;
  for (int64_t t = 0; t < L; ++t) {
    const Tensor k = step(rk, t);
    const Tensor vbar = matmul(R, unsqueeze(k, -1));
    R = R + matmul(unsqueeze(step(gamma, t), -1) * (unsqueeze(step(rv, t), -1) - vbar), unsqueeze(k, -2));
    const Tensor a = step(z, t) + squeeze(matmul(R, unsqueeze(unsqueeze(softmax(h, -1), 2), -1)), -1);
    const Tensor i = sigmoid(gate(a, 0));
    c = i * gate(a, 1) + (1.0 - i) * c;
    h = sigmoid(gate(a, 2)) * c;
    hs.push_back(h);
  }
  return stack(hs, 0);
}

void bench(int64_t L, int64_t B, int64_t H, int64_t D, bool with_composed) {
  const double tokens = static_cast<double>(L * B);
  std::printf("L=%ld B=%ld H=%ld D=%ld, float32\n", L, B, H, D);
  Generator gen(1);
  const Tensor z = uniform({L, B, H, 3, D}, -1, 1, gen), rk = softmax(uniform({L, B, H, 3, D}, -2, 2, gen), -1);
  const Tensor rv = uniform({L, B, H, 3, D}, -1, 1, gen), gamma = uniform({L, B, H, 3, 1}, 0, 1, gen);
  const Tensor g = uniform({L, B, H, D}, -1, 1, gen);
  // The delta rule at the same head size, as the Delta Net layer runs it.
  const Tensor q = softmax(uniform({L, B, H, D}, -2, 2, gen), -1), k = softmax(uniform({L, B, H, D}, -2, 2, gen), -1);
  const Tensor v = uniform({L, B, H, D}, -1, 1, gen), beta = uniform({L, B, H, 1}, 0, 1, gen);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Timing lstm_fwd, rule_fwd;
    {
      NoGradGuard no_grad;
      lstm_fwd = measure(10, [&] { delta_lstm(z, rk, rv, gamma); });
      rule_fwd = measure(10, [&] { delta_rule(q, k, v, beta); });
    }
    print("delta_lstm forward (no grad)", threads, lstm_fwd, tokens);
    print("delta_rule forward (no grad)", threads, rule_fwd, tokens);
    Tensor lz = z.detach().requires_grad_(), lk = rk.detach().requires_grad_(), lv = rv.detach().requires_grad_(),
           lg = gamma.detach().requires_grad_();
    const Timing lstm_both = measure(10, [&] {
      delta_lstm(lz, lk, lv, lg).backward(g);
      for (Tensor* t : {&lz, &lk, &lv, &lg}) t->zero_grad();
    });
    Tensor lq = q.detach().requires_grad_(), lk2 = k.detach().requires_grad_(), lv2 = v.detach().requires_grad_(),
           lb = beta.detach().requires_grad_();
    const Timing rule_both = measure(10, [&] {
      delta_rule(lq, lk2, lv2, lb).backward(g);
      for (Tensor* t : {&lq, &lk2, &lv2, &lb}) t->zero_grad();
    });
    print("delta_lstm forward + backward", threads, lstm_both, tokens);
    print("delta_rule forward + backward", threads, rule_both, tokens);
    std::printf("  delta_lstm / delta_rule, %d thr: forward %.2f, forward + backward %.2f (median wall)\n", threads,
                lstm_fwd.wall_median / rule_fwd.wall_median, lstm_both.wall_median / rule_both.wall_median);
    if (with_composed) {
      const Timing t = measure(2, [&] {
        composed(lz, lk, lv, lg).backward(g);
        for (Tensor* x : {&lz, &lk, &lv, &lg}) x->zero_grad();
      });
      print("composed ops, forward + backward", threads, t, tokens);
      std::printf("  composed / fused, %d thr: %.1f (median wall)\n", threads, t.wall_median / lstm_both.wall_median);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool with_composed = argc > 1 && std::strcmp(argv[1], "--composed") == 0;
  const int first = with_composed ? 2 : 1, sizes = argc - first;
  if (sizes == 0) {
    for (int64_t D : {32, 64}) bench(256, 8, 4, D, with_composed);
    return 0;
  }
  if (sizes != 4) {
    std::fprintf(stderr, "usage: bench_delta_lstm [--composed] [L B H D]\n");
    return 2;
  }
  int64_t size[4];
  for (int i = 0; i < 4; ++i) {
    char* end = nullptr;
    size[i] = std::strtol(argv[first + i], &end, 10);
    if (*end != '\0' || size[i] <= 0) {
      std::fprintf(stderr, "bench_delta_lstm: '%s' is not a positive size\n", argv[first + i]);
      return 2;
    }
  }
  bench(size[0], size[1], size[2], size[3], with_composed);
  return 0;
}
