// demo_train: the smallest complete training loop on loom's engine.
//
// A two-layer tanh network learns y = sin(3x) on [-1, 1] with Adam. It shows
// the pieces every larger model uses: parameters as leaves that require grad,
// a forward pass of engine ops, backward(), and an update under NoGradGuard.
//
//   ./build/examples/demo_train [--steps N] [--seed S]
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "autodiff/grad_mode.h"
#include "engine/ops.h"
#include "examples/command_line.h"

using namespace loom;

namespace {

struct AdamState {
  Tensor m, v;
};

// One Adam step (PyTorch's form) on every parameter.
void adam_step(std::vector<Tensor>& params, std::vector<AdamState>& state, int step, double lr) {
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor g = params[i].grad();
    AdamState& s = state[i];
    s.m = s.m * b1 + g * (1 - b1);
    s.v = s.v * b2 + g * g * (1 - b2);
    const Tensor m_hat = s.m / (1 - std::pow(b1, step));
    const Tensor v_hat = s.v / (1 - std::pow(b2, step));
    add_(params[i], m_hat / (sqrt(v_hat) + eps), -lr);
    params[i].zero_grad();
  }
}

// The target: sin(3x), computed on the host (the engine has no sin op).
Tensor sin_target(const Tensor& x) {
  std::vector<float> v = x.to_vector<float>();
  for (float& e : v) e = std::sin(3 * e);
  return Tensor::from_vector(v, x.shape());
}

}  // namespace

int main(int argc, char** argv) {
  try {
    int64_t steps = 500;
    uint64_t seed = 0;
    examples::CommandLine cli("demo_train",
                              "the smallest complete training loop on loom's engine: a two-layer tanh network "
                              "learns y = sin(3x) on [-1, 1] with Adam, printing the loss to stdout. Needs no data "
                              "and writes nothing to disk.",
                              "./build/examples/demo_train --steps 1000");
    cli.option("--steps", "N", "500", "training steps; the loss is printed at step 1 and every 50 steps.",
               [&](const auto& v) { steps = v.positive_integer(); });
    cli.option("--seed", "S", "0", "seed of the initial weights and the sampled inputs.",
               [&](const auto& v) { seed = static_cast<uint64_t>(v.integer_at_least(0)); });
    if (cli.parse(argc, argv).exit) return 0;
    Generator gen(seed);
    const int64_t hidden = 64, batch = 256;
    // PyTorch's default Linear initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    auto param = [&](Shape shape, double fan_in) {
      Tensor t = uniform(shape, -1 / std::sqrt(fan_in), 1 / std::sqrt(fan_in), gen);
      t.requires_grad_();
      return t;
    };
    std::vector<Tensor> params = {param({1, hidden}, 1), param({hidden}, 1), param({hidden, hidden}, hidden),
                                  param({hidden}, hidden), param({hidden, 1}, hidden), param({1}, hidden)};
    std::vector<AdamState> state;
    for (const Tensor& p : params) state.push_back({Tensor::zeros(p.shape()), Tensor::zeros(p.shape())});

    std::printf("demo: a 1-%lld-%lld-1 tanh network learns y = sin(3x), batch %lld, Adam lr 1e-2\n",
                (long long)hidden, (long long)hidden, (long long)batch);
    for (int step = 1; step <= steps; ++step) {
      const Tensor x = uniform({batch, 1}, -1, 1, gen);
      const Tensor y = sin_target(x);
      const Tensor h1 = tanh(matmul(x, params[0]) + params[1]);
      const Tensor h2 = tanh(matmul(h1, params[2]) + params[3]);
      const Tensor pred = matmul(h2, params[4]) + params[5];
      const Tensor loss = mean(pow(pred - y, 2.0));
      loss.backward();
      adam_step(params, state, step, 1e-2);
      if (step == 1 || step % 50 == 0) std::printf("step %4d  loss %.6f\n", step, loss.item());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
