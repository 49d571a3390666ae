// bench_fast_weights: timings of the fused delta-rule kernels and of whole
// training steps of the fast-weights model (not a test: nothing is asserted).
//
//   bench_fast_weights            kernel at labml's size, DPFP, small-model step
//   bench_fast_weights --default  also a training step of the default 19M model
//   bench_fast_weights --composed also the step-by-step composition of the recurrence
//   bench_fast_weights --kernel L B H Dk Dv
//                                 the kernel alone, at that size (the algorithmic
//                                 tasks' layer: 256 64 4 32 16)
//
// Every timing is taken for 1 and 2 threads and reported as the median and the
// minimum wall time over the runs (after one warm-up run), and as the minimum
// process CPU time (summed over threads). On a machine shared with other jobs the
// wall times spread widely; the CPU time shows what the code itself costs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "autodiff/grad_mode.h"
#include "engine/backend.h"
#include "engine/device.h"
#include "engine/kernels/delta_rule.h"
#include "engine/ops.h"
#include "models/families/fast_weights.h"
#include "engine/timing.h"

namespace {

using namespace loom;

using timing::measure;
using timing::Timing;

void print(const char* what, int threads, const Timing& t, double flops, double tokens = 0) {
  std::printf("  %-34s %d thr  wall median %8.2f ms (min %8.2f)  cpu min %8.2f ms", what, threads,
              t.wall_median * 1e3, t.wall_min * 1e3, t.cpu_min * 1e3);
  if (flops > 0) std::printf("  %6.1f GFLOP/s (median wall)", flops / t.wall_median * 1e-9);
  if (tokens > 0) std::printf("  %8.0f tokens/s", tokens / t.wall_median);
  std::printf("\n");
}

Tensor rand(const Shape& s, double lo, double hi, Generator& g) { return uniform(s, lo, hi, g); }

// The recurrence written with engine ops, one step at a time (what autograd
// through labml's Python loop does: every W_t is kept for the backward).
Tensor composed(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta) {
  const int64_t L = q.size(0), B = q.size(1), H = q.size(2), Dk = q.size(3), Dv = v.size(3);
  Tensor W = Tensor::zeros({B, H, Dv, Dk});
  std::vector<Tensor> ys;
  for (int64_t t = 0; t < L; ++t) {
    const Tensor kt = narrow(k, 0, t, 1).reshape({B, H, Dk, 1});
    const Tensor vt = narrow(v, 0, t, 1).reshape({B, H, Dv, 1});
    const Tensor u = narrow(beta, 0, t, 1).reshape({B, H, 1, 1}) * (vt - matmul(W, kt));
    W = W + matmul(u, transpose(kt, 2, 3));
    ys.push_back(matmul(W, narrow(q, 0, t, 1).reshape({B, H, Dk, 1})).reshape({1, B, H, Dv}));
  }
  return concat(ys, 0);
}

struct KernelSize {
  int64_t L = 128, B = 16, H = 8, Dk = 128, Dv = 64;  // labml's fast-weights size
};

void bench_kernel(bool with_composed, const KernelSize& size) {
  const int64_t L = size.L, B = size.B, H = size.H, Dk = size.Dk, Dv = size.Dv;
  std::printf("delta_rule, L=%ld B=%ld H=%ld Dk=%ld Dv=%ld, float32 (forward 6, backward 14 FLOPs per W element "
              "per step)\n",
              L, B, H, Dk, Dv);
  Generator gen(1);
  // Keys and queries like DPFP's: non-negative, summing to about 1.
  const Tensor q = rand({L, B, H, Dk}, 0, 2.0 / Dk, gen), k = rand({L, B, H, Dk}, 0, 2.0 / Dk, gen);
  const Tensor v = rand({L, B, H, Dv}, -1, 1, gen), beta = rand({L, B, H, 1}, 0, 1, gen);
  const Tensor g = rand({L, B, H, Dv}, -1, 1, gen);
  const double elements = static_cast<double>(L * B * H * Dk * Dv);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    {
      NoGradGuard no_grad;
      print("forward (no grad)", threads, measure(10, [&] { delta_rule(q, k, v, beta); }), 6 * elements);
    }
    // The backward kernel alone, on what a recorded forward saves.
    Tensor y = Tensor::empty({L, B, H, Dv}), last = Tensor::empty({B, H, Dv, Dk}), vbar = Tensor::empty({L, B, H, Dv});
    backend_for(q).delta_rule({.q = q, .k = k, .v = v, .beta = beta, .out = y, .final_state = last, .vbar = vbar});
    Tensor gq = Tensor::empty(q.shape()), gk = Tensor::empty(k.shape()), gv = Tensor::empty(v.shape()),
           gb = Tensor::empty(beta.shape());
    print("backward kernel", threads,
          measure(10, [&] { backend_for(q).delta_rule_backward({.grad_out = g, .q = q, .k = k, .v = v, .beta = beta, .vbar = vbar,
                                                             .final_state = last, .grad_q = gq, .grad_k = gk,
                                                             .grad_v = gv, .grad_beta = gb}); }),
          14 * elements);
    Tensor lq = q.detach().requires_grad_(), lk = k.detach().requires_grad_(), lv = v.detach().requires_grad_(),
           lb = beta.detach().requires_grad_();
    print("forward + backward (autograd)", threads, measure(10, [&] {
            delta_rule(lq, lk, lv, lb).backward(g);
            for (Tensor* t : {&lq, &lk, &lv, &lb}) t->zero_grad();
          }),
          20 * elements);
    if (with_composed) {
      print("composed ops, forward + backward", threads, measure(2, [&] {
              composed(lq, lk, lv, lb).backward(g);
              for (Tensor* t : {&lq, &lk, &lv, &lb}) t->zero_grad();
            }),
            20 * elements);
    }
  }
}

// The two feature maps with their sum normalisation, as the fast layers call them.
void bench_features() {
  const int64_t L = 128, B = 16, H = 8, D = 64;
  Generator gen(2);
  Tensor x = rand({L, B, H, D}, -1, 1, gen).requires_grad_();
  struct Map {
    const char* name;
    int64_t width;  // features per head
    std::function<Tensor(const Tensor&)> features;
  };
  const Map maps[] = {{"DPFP nu=1", 2 * D, [](const Tensor& t) { return models::dpfp_features(t, 1); }},
                      {"ELU+1", D, [](const Tensor& t) { return models::elu_plus_one_features(t); }}};
  for (const Map& map : maps) {
    std::printf("%s + sum normalisation, x [%ld, %ld, %ld, %ld] -> [.., %ld], float32\n", map.name, L, B, H, D,
                map.width);
    const Tensor g = rand({L, B, H, map.width}, -1, 1, gen);
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      {
        NoGradGuard no_grad;
        print("forward", threads, measure(10, [&] { map.features(x); }), 0);
      }
      print("forward + backward", threads, measure(10, [&] {
              map.features(x).backward(g);
              x.zero_grad();
            }),
            0);
    }
  }
}

// forward, cross-entropy, backward, and a plain SGD update (the optimizer's cost
// is one pass over the parameters either way).
void bench_step(const char* name, models::ModelConfig c, int64_t L, int64_t B, int runs) {
  auto model = models::make_model(c);
  Generator gen(3);
  std::vector<int64_t> ids(L * B), next(L * B);
  for (int64_t i = 0; i < L * B; ++i) {
    ids[i] = static_cast<int64_t>((i * 7919) % c.vocab);
    next[i] = static_cast<int64_t>((i * 104729 + 3) % c.vocab);
  }
  const Tensor tokens = Tensor::from_vector(ids, {L, B}), targets = Tensor::from_vector(next, {L * B});
  const auto params = model->parameters();
  std::printf("training step, %s: d_model %ld, heads %ld, d_ff %ld, layers %ld, %ld parameters, L=%ld B=%ld\n", name,
              c.d_model, c.heads, c.d_ff, c.layers, model->parameter_count(), L, B);
  const double tokens_per_step = static_cast<double>(L * B);
  const double flops = model->training_flops_per_token(L) * tokens_per_step;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    print("step", threads, measure(runs, [&] {
            const Tensor loss = cross_entropy(model->forward(tokens).reshape({L * B, c.vocab}), targets);
            loss.backward();
            NoGradGuard no_grad;
            for (const Tensor& p : params)
              if (p.grad().defined()) add_(p, p.grad(), -1e-3);
            for (const Tensor& p : params) p.zero_grad();
          }),
          flops, tokens_per_step);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool with_default = false, with_composed = false, kernel_only = false;
  KernelSize size;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--default") == 0) {
      with_default = true;
    } else if (std::strcmp(argv[i], "--composed") == 0) {
      with_composed = true;
    } else if (std::strcmp(argv[i], "--kernel") == 0 && i + 5 < argc) {
      int64_t* dims[] = {&size.L, &size.B, &size.H, &size.Dk, &size.Dv};
      for (int64_t* d : dims) {
        *d = std::atoll(argv[++i]);
        if (*d <= 0) {
          std::fprintf(stderr, "bench_fast_weights: --kernel takes five positive sizes, got '%s'\n", argv[i]);
          return 2;
        }
      }
      kernel_only = true;
    } else {
      std::fprintf(stderr, "usage: bench_fast_weights [--default] [--composed] [--kernel L B H Dk Dv]\n");
      return 2;
    }
  }
  bench_kernel(with_composed, size);
  if (kernel_only) return 0;
  bench_features();
  models::ModelConfig small;
  small.family = "fast_weights";
  small.d_model = 256;
  small.heads = 4;
  small.d_ff = 1024;
  small.layers = 4;
  bench_step("small", small, 128, 16, 5);
  if (with_default) {
    models::ModelConfig labml;
    labml.family = "fast_weights";
    bench_step("default (labml)", labml, 128, 16, 3);
  }
  return 0;
}
