// bench_feedback: training-step throughput of the feedback transformer.
//
// Times forward + backward (the optimizer update is left out: it is the same for
// every family) on random tokens and prints tokens/s and model GFLOP/s from
// training_flops_per_token. The first steps warm the allocator's cache and are
// not timed. Besides wall time it prints the process's CPU time: on a shared
// machine, CPU time per thread is the closer estimate of an unloaded run.
//
//   OMP_NUM_THREADS=2 ./build/examples/bench_feedback [--d-model 256] [--heads 4] [--d-ff 1024]
//       [--layers 4] [--seq-len 64] [--batch 16] [--original] [--steps 5] [--warmup 1]
#include <time.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "engine/ops.h"
#include "models/language_model.h"

using namespace loom;

namespace {
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}
}  // namespace

int main(int argc, char** argv) {
  try {
    models::ModelConfig c;
    c.family = "feedback";
    c.d_model = 256;
    c.heads = 4;
    c.d_ff = 1024;
    c.layers = 4;
    int64_t L = 64, B = 16;
    int steps = 5, warmup = 1;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto next = [&]() -> int64_t {
        if (i + 1 >= argc) throw Error("bench_feedback: " + arg + " needs a value");
        return std::stoll(argv[++i]);
      };
      if (arg == "--d-model") c.d_model = next();
      else if (arg == "--heads") c.heads = next();
      else if (arg == "--d-ff") c.d_ff = next();
      else if (arg == "--layers") c.layers = next();
      else if (arg == "--seq-len") L = next();
      else if (arg == "--batch") B = next();
      else if (arg == "--steps") steps = static_cast<int>(next());
      else if (arg == "--warmup") warmup = static_cast<int>(next());
      else if (arg == "--original") c.shared_kv = false;
      else throw Error("bench_feedback: unknown argument '" + arg + "'");
    }
    c.max_seq_len = std::max<int64_t>(L, c.max_seq_len);
    const auto model = models::make_model(c);

    std::mt19937_64 rng(1);
    std::vector<int64_t> ids(L * B), next_ids(L * B);
    for (auto& x : ids) x = static_cast<int64_t>(rng() % c.vocab);
    for (auto& x : next_ids) x = static_cast<int64_t>(rng() % c.vocab);
    const Tensor tokens = Tensor::from_vector(ids, {L, B});
    const Tensor targets = Tensor::from_vector(next_ids, {L * B});

    double seconds = 0.0, fwd_seconds = 0.0, cpu = 0.0;
    for (int s = 0; s < warmup + steps; ++s) {
      for (const Tensor& p : model->parameters()) p.zero_grad();
      const double c0 = cpu_seconds();
      const auto t0 = std::chrono::steady_clock::now();
      const Tensor loss = cross_entropy(reshape(model->forward(tokens), {L * B, c.vocab}), targets);
      const auto t1 = std::chrono::steady_clock::now();
      loss.backward();
      const auto t2 = std::chrono::steady_clock::now();
      if (s >= warmup) {
        cpu += cpu_seconds() - c0;
        seconds += std::chrono::duration<double>(t2 - t0).count();
        fwd_seconds += std::chrono::duration<double>(t1 - t0).count();
      }
    }
    const double per_step = seconds / steps;
    const double tokens_per_s = static_cast<double>(L * B) / per_step;
    std::printf("feedback %s d_model %lld heads %lld d_ff %lld layers %lld, L %lld B %lld: %d steps\n",
                c.shared_kv ? "shared-KV" : "original", (long long)c.d_model, (long long)c.heads,
                (long long)c.d_ff, (long long)c.layers, (long long)L, (long long)B, steps);
    std::printf("  step %.3f s (forward %.3f s, backward %.3f s)  %.0f tokens/s  %.1f model GFLOP/s\n", per_step,
                fwd_seconds / steps, per_step - fwd_seconds / steps, tokens_per_s,
                tokens_per_s * model->training_flops_per_token(L) / 1e9);
    std::printf("  CPU time %.3f s per step (all threads)\n", cpu / steps);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
