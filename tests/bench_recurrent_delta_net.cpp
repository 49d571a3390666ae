// bench_recurrent_delta_net: timings of the fused Recurrent Delta Net (RDN)
// against the same recurrence written step by step with engine ops (not a test:
// nothing is asserted).
//
//   bench_recurrent_delta_net [L B H D]     default 256 16 16 16: the algorithmic
//                                           tasks' layer (hidden 256, 16 heads)
//
// Every timing is taken for 1 and 2 threads and reported as the median and the
// minimum wall time over the runs (after one warm-up run), and as the minimum
// process CPU time (summed over threads). On a machine shared with other jobs the
// wall times spread widely; the CPU time shows what the code itself costs.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <vector>

#include "autodiff/grad_mode.h"
#include "engine/device.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/timing.h"

namespace {

using namespace loom;

using timing::measure;
using timing::Timing;

void print(const char* what, int threads, const Timing& t) {
  std::printf("  %-36s %d thr  wall median %9.2f ms (min %9.2f)  cpu min %9.2f ms\n", what, threads,
              t.wall_median * 1e3, t.wall_min * 1e3, t.cpu_min * 1e3);
}

// The recurrence with engine ops, one step at a time (what autograd through a
// Python loop does: every W_t and every slow-net activation is kept).
Tensor composed(const std::vector<Tensor>& x) {
  const Tensor &qx = x[0], &kx = x[1], &vx = x[2], &bx = x[3], &Rq = x[4], &Rk = x[5], &Rv = x[6], &rb = x[7];
  const int64_t L = qx.size(0), B = qx.size(1), H = qx.size(2), D = qx.size(3);
  Tensor W = Tensor::zeros({B, H, D, D});
  Tensor y = Tensor::zeros({B, H, D});
  auto step = [](const Tensor& t, int64_t i) { return squeeze(narrow(t, 0, i, 1), 0); };
  auto apply = [](const Tensor& R, const Tensor& a) { return squeeze(matmul(R, unsqueeze(a, -1)), -1); };
  std::vector<Tensor> ys;
  for (int64_t t = 0; t < L; ++t) {
    const Tensor a = tanh(y);
    const Tensor q = softmax(step(qx, t) + apply(Rq, a), -1);
    const Tensor k = softmax(step(kx, t) + apply(Rk, a), -1);
    const Tensor v = step(vx, t) + apply(Rv, a);
    const Tensor beta = sigmoid(step(bx, t) + sum(rb * a, {-1}, true));
    const Tensor u = unsqueeze(beta, -1) * (unsqueeze(v, -1) - matmul(W, unsqueeze(k, -1)));
    W = W + matmul(u, unsqueeze(k, -2));
    y = squeeze(matmul(W, unsqueeze(q, -1)), -1);
    ys.push_back(y);
  }
  return stack(ys, 0);
}

Tensor fused(const std::vector<Tensor>& x) {
  return recurrent_delta_net(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t L = 256, B = 16, H = 16, D = 16;
  if (argc == 5) {
    L = std::atol(argv[1]);
    B = std::atol(argv[2]);
    H = std::atol(argv[3]);
    D = std::atol(argv[4]);
  } else if (argc != 1) {
    std::fprintf(stderr, "usage: %s [L B H D]\n", argv[0]);
    return 2;
  }
  Generator gen(1);
  const double r = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<Tensor> x = {uniform({L, B, H, D}, -1, 1, gen), uniform({L, B, H, D}, -1, 1, gen),
                           uniform({L, B, H, D}, -1, 1, gen), uniform({L, B, H, 1}, -1, 1, gen),
                           uniform({H, D, D}, -r, r, gen),    uniform({H, D, D}, -r, r, gen),
                           uniform({H, D, D}, -r, r, gen),    uniform({H, D}, -r, r, gen)};
  for (Tensor& t : x) t.requires_grad_();
  const Tensor g = uniform({L, B, H, D}, -1, 1, gen);
  std::printf("recurrent_delta_net, L=%ld B=%ld H=%ld D=%ld, float32\n", static_cast<long>(L), static_cast<long>(B),
              static_cast<long>(H), static_cast<long>(D));
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    {
      NoGradGuard no_grad;
      print("fused forward (no grad)", threads, measure(10, [&] { fused(x); }));
      print("composed forward (no grad)", threads, measure(3, [&] { composed(x); }));
    }
    print("fused forward + backward", threads, measure(10, [&] {
            for (Tensor& t : x) t.zero_grad();
            fused(x).backward(g);
          }));
    print("composed forward + backward", threads, measure(3, [&] {
            for (Tensor& t : x) t.zero_grad();
            composed(x).backward(g);
          }));
  }
  return 0;
}
