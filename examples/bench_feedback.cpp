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
#include "examples/command_line.h"
#include "models/families/language_model.h"

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
    int64_t steps = 5, warmup = 1;
    examples::CommandLine cli(
        "bench_feedback",
        "training-step throughput of the feedback transformer: times forward + backward on random tokens after "
        "untimed warm-up steps and prints tokens/s, model GFLOP/s and the process's CPU time to stdout (nothing is "
        "written to disk).",
        "OMP_NUM_THREADS=2 ./build/examples/bench_feedback --layers 2 --steps 3");
    const auto size = [&](const char* name, const char* value, int64_t fallback, const char* what, int64_t& target) {
      cli.option(name, value, std::to_string(fallback), what, [&target](const auto& v) { target = v.positive_integer(); });
    };
    size("--d-model", "D", c.d_model, "model width.", c.d_model);
    size("--heads", "H", c.heads, "attention heads.", c.heads);
    size("--d-ff", "F", c.d_ff, "feed-forward width.", c.d_ff);
    size("--layers", "N", c.layers, "layers.", c.layers);
    size("--seq-len", "L", L, "tokens per sequence.", L);
    size("--batch", "B", B, "sequences per step.", B);
    size("--steps", "N", steps, "timed steps.", steps);
    cli.option("--warmup", "N", std::to_string(warmup), "untimed steps first (they fill the allocator's cache).",
               [&](const auto& v) { warmup = v.integer_at_least(0); });
    cli.flag("--original", "the original feedback transformer: separate key and value memories instead of one "
                           "shared projection.",
             [&](const auto&) { c.shared_kv = false; });
    if (cli.parse(argc, argv).exit) return 0;
    c.max_seq_len = std::max<int64_t>(L, c.max_seq_len);
    const auto model = models::make_model(c);

    std::mt19937_64 rng(1);
    std::vector<int64_t> ids(L * B), next_ids(L * B);
    for (auto& x : ids) x = static_cast<int64_t>(rng() % c.vocab);
    for (auto& x : next_ids) x = static_cast<int64_t>(rng() % c.vocab);
    const Tensor tokens = Tensor::from_vector(ids, {L, B});
    const Tensor targets = Tensor::from_vector(next_ids, {L * B});

    double seconds = 0.0, fwd_seconds = 0.0, cpu = 0.0;
    size_t timed_allocations = 0;  // blocks the allocator's cache could not serve in the timed steps
    for (int64_t s = 0; s < warmup + steps; ++s) {
      const size_t allocations = cpu_allocator().stats().system_allocations;
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
        timed_allocations += cpu_allocator().stats().system_allocations - allocations;
      }
    }
    const double per_step = seconds / steps;
    const double tokens_per_s = static_cast<double>(L * B) / per_step;
    std::printf("feedback %s d_model %lld heads %lld d_ff %lld layers %lld, L %lld B %lld: %d steps\n",
                c.shared_kv ? "shared-KV" : "original", (long long)c.d_model, (long long)c.heads,
                (long long)c.d_ff, (long long)c.layers, (long long)L, (long long)B, (int)steps);
    std::printf("  step %.3f s (forward %.3f s, backward %.3f s)  %.0f tokens/s  %.1f model GFLOP/s\n", per_step,
                fwd_seconds / steps, per_step - fwd_seconds / steps, tokens_per_s,
                tokens_per_s * model->training_flops_per_token(L) / 1e9);
    std::printf("  CPU time %.3f s per step (all threads)\n", cpu / steps);
    std::printf("  %.1f system allocations per timed step (the rest came from the allocator's cache)\n",
                static_cast<double>(timed_allocations) / static_cast<double>(steps));
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
