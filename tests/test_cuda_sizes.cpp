// test_cuda_sizes.cpp: the CUDA kernels against the CPU at the sizes the models
// train with, and the same bits from each fused backward run twice.
//
// Part of the test_cuda executable (its main skips everything without a GPU).
// test_cuda.cpp checks every kernel at tiny shapes; here the shapes are those of
// labml's configs: head dim 64, sequences of 256 and 512, batch x heads 256, DPFP
// keys of 256 (64-wide heads, nu = 1), so that launch shapes, grid-stride loops,
// shared-memory opt-ins and the lengths of the sums are the ones training uses.
//
// Tolerance. Summing 256 or 512 terms in float32 in another order moves a result
// further than test_cuda's tiny shapes do, and the recurrence of the delta rule
// carries it over 256 steps, so a fixed 1e-5 would either fail for the wrong
// reason or be loose where it need not be. Each case therefore measures its own
// float32 noise on the CPU: the same computation in float32 and in float64. CUDA
// float32 must then be as close to CPU float32 as 4x that noise (two float32 runs
// differ by about twice one run's error), and never needs to be closer than 1e-5,
// test_cuda's bound, nor is allowed further than 1e-3; errors are relative to the
// largest CPU value of each tensor.
//
// Determinism (cuda/README.md, "Conventions"): all these kernels sum without
// atomics, in a fixed order, so a second CUDA run of forward and backward from
// the same inputs must give the same bits, gradients included.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/random.h"
#include "tests/cuda_test_inputs.h"
#include "tests/fused_check.h"

namespace loom {
namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// A float64 CPU tensor of uniform values in [low, high), the same for the same seed.
Tensor uniform64(const Shape& shape, uint64_t seed, double low = -1.0, double high = 1.0) {
  return cuda_test::random_cpu(shape, seed, low, high, DType::f64);
}

using cuda_test::values;
constexpr auto ids = cuda_test::random_ids;

// max |got - want| / max |want| (max |got - want| when want is all zero).
double relative_error(const Tensor& got, const Tensor& want) {
  const std::vector<double> g = values(got), w = values(want);
  REQUIRE(g.size() == w.size());
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < w.size(); ++i) {
    diff = std::max(diff, std::abs(g[i] - w[i]));
    scale = std::max(scale, std::abs(w[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

using test::same_bits;

// The output of f and the gradient of every floating-point input under
// `upstream`, computed on `device` in `dtype` from the float64 `inputs`. An
// undefined `upstream` is first set to uniform values of the output's shape.
std::vector<Tensor> forward_backward(const std::vector<Tensor>& inputs, const Fn& f, Device device, DType dtype,
                                     Tensor& upstream, uint64_t upstream_seed) {
  std::vector<Tensor> xs;
  for (const Tensor& x : inputs) {
    Tensor y = is_floating(x.dtype()) ? x.to(dtype).to(device) : x.to(device);
    if (is_floating(x.dtype())) y.requires_grad_();
    xs.push_back(y);
  }
  const Tensor out = f(xs);
  if (!upstream.defined()) upstream = uniform64(out.shape(), upstream_seed);
  out.backward(upstream.to(dtype).to(device));
  std::vector<Tensor> results{out.detach()};
  for (const Tensor& x : xs)
    if (is_floating(x.dtype())) results.push_back(x.grad());
  return results;
}

// CUDA float32 against CPU float32, within 4x the CPU's own float32 error
// (against float64) and at least 1e-5; then a second CUDA run, bit for bit.
void check_at_size(const std::string& name, const std::vector<Tensor>& inputs, const Fn& f) {
  INFO(name);
  Tensor upstream;
  const uint64_t seed = 0x5eed ^ std::hash<std::string>{}(name);
  const std::vector<Tensor> cpu64 = forward_backward(inputs, f, Device::cpu, DType::f64, upstream, seed);
  const std::vector<Tensor> cpu32 = forward_backward(inputs, f, Device::cpu, DType::f32, upstream, seed);
  const std::vector<Tensor> gpu = forward_backward(inputs, f, Device::cuda, DType::f32, upstream, seed);
  const std::vector<Tensor> again = forward_backward(inputs, f, Device::cuda, DType::f32, upstream, seed);
  REQUIRE(gpu.size() == cpu32.size());
  for (size_t i = 0; i < gpu.size(); ++i) {
    const std::string what = i == 0 ? "output" : "gradient of input " + std::to_string(i - 1);
    INFO(what);
    REQUIRE(gpu[i].defined() == cpu32[i].defined());
    if (!cpu32[i].defined()) continue;
    const double noise = relative_error(cpu32[i], cpu64[i]);
    // Never looser than 1e-3: float32 rounding over these sums stays far below it, so
    // a larger "noise" would mean the float64 run computed something else.
    const double tolerance = std::min(std::max(1e-5, 4 * noise), 1e-3);
    const double error = relative_error(gpu[i], cpu32[i]);
    CHECK_MESSAGE(error <= tolerance, "cuda vs cpu (float32): ", error, ", cpu float32 vs float64: ", noise,
                  ", tolerance ", tolerance);
    CHECK_MESSAGE(same_bits(again[i], gpu[i]), "a second CUDA run gave other bits");
  }
}

constexpr int64_t kHeadDim = 64;

TEST_CASE("cuda sizes: attention, causal, L 256, batch x heads 256, head dim 64") {
  const int64_t L = 256, B = 32, H = 8;
  const double scale = 1.0 / std::sqrt(static_cast<double>(kHeadDim));
  check_at_size("attention causal", {uniform64({L, B, H, kHeadDim}, 1, -2, 2), uniform64({L, B, H, kHeadDim}, 2, -2, 2),
                                     uniform64({L, B, H, kHeadDim}, 3)},
                [scale](const auto& v) { return attention(v[0], v[1], v[2], scale, true); });
}

TEST_CASE("cuda sizes: attention, causal with dropout 0.1, L 512, head dim 64") {
  // batch x heads 64: a 512 x 512 causal attention at 256 would take the CPU reference a minute.
  const int64_t L = 512, B = 8, H = 8;
  const double scale = 1.0 / std::sqrt(static_cast<double>(kHeadDim));
  check_at_size("attention causal dropout", {uniform64({L, B, H, kHeadDim}, 4, -2, 2),
                                             uniform64({L, B, H, kHeadDim}, 5, -2, 2), uniform64({L, B, H, kHeadDim}, 6)},
                [scale](const auto& v) {
                  Generator gen(41);  // the same Philox counters on every device and run
                  return attention(v[0], v[1], v[2], scale, true, 0.1, &gen);
                });
}

TEST_CASE("cuda sizes: delta_rule, L 256, batch x heads 256, DPFP keys 256, values 64") {
  const int64_t L = 256, B = 32, H = 8, Dk = 256, Dv = kHeadDim;
  // As the fast-weights model feeds it: keys normalised to unit length, beta in (0, 1).
  const Fn delta = [](const auto& v) {
    const Tensor k = v[1] / sqrt(sum(v[1] * v[1], {-1}, true));
    return delta_rule(v[0], k, v[2], sigmoid(v[3]));
  };
  check_at_size("delta rule", {uniform64({L, B, H, Dk}, 7, 0, 1), uniform64({L, B, H, Dk}, 8, 0, 1),
                               uniform64({L, B, H, Dv}, 9), uniform64({L, B, H, 1}, 10)},
                delta);
}

TEST_CASE("cuda sizes: feedback_attention over 512 memory slots, batch x heads 256, head dim 64") {
  const int64_t n = 512, R = 512, B = 32, H = 8;
  const double scale = 1.0 / std::sqrt(static_cast<double>(kHeadDim));
  check_at_size("feedback attention",
                {uniform64({B, H, kHeadDim}, 11), uniform64({n, B, H, kHeadDim}, 12), uniform64({n, B, H, kHeadDim}, 13),
                 uniform64({R, H, kHeadDim}, 14), uniform64({R, H}, 15), uniform64({H, kHeadDim}, 16)},
                [scale](const auto& v) { return feedback_attention(v[0], v[1], v[2], v[3], v[4], v[5], scale); });
}

TEST_CASE("cuda sizes: layer_norm over d_model 512, 8192 rows") {
  check_at_size("layer norm", {uniform64({256, 32, 512}, 17, -2, 2), uniform64({512}, 18, 0.5, 1.5), uniform64({512}, 19)},
                [](const auto& v) { return layer_norm(v[0], v[1], v[2], 1e-5); });
}

TEST_CASE("cuda sizes: causal_conv1d of Primer EZ, L 256, 512 channels, width 3") {
  check_at_size("causal conv1d", {uniform64({256, 32, 512}, 20), uniform64({512, 3}, 21), uniform64({512}, 22)},
                [](const auto& v) { return causal_conv1d(v[0], v[1], v[2]); });
}

TEST_CASE("cuda sizes: dpfp of 64-wide heads, nu 2 (DPFP keys 256), L 256, batch x heads 256") {
  check_at_size("dpfp", {uniform64({256, 32, 8, kHeadDim}, 40, -2, 2)}, [](const auto& v) { return dpfp(v[0], 2); });
}

TEST_CASE("cuda sizes: the sum normalisation of 256 DPFP keys and of ELU+1 of 64-wide heads, L 256, batch x heads 256") {
  check_at_size("sum_normalise", {uniform64({256, 32, 8, 4 * kHeadDim}, 41, 0.01, 2)},
                [](const auto& v) { return sum_normalise(v[0], 1e-6); });
  check_at_size("elu_plus_one_normalised", {uniform64({256, 32, 8, kHeadDim}, 42, -4, 4)},
                [](const auto& v) { return elu_plus_one_normalised(v[0], 1e-6); });
}

TEST_CASE("cuda sizes: softmax and log_softmax over 256 keys, batch x heads x queries rows") {
  check_at_size("softmax", {uniform64({256 * 256, 256}, 23, -4, 4)}, [](const auto& v) { return softmax(v[0], -1); });
  check_at_size("log_softmax", {uniform64({256 * 256, 256}, 24, -4, 4)},
                [](const auto& v) { return log_softmax(v[0], -1); });
}

TEST_CASE("cuda sizes: cross_entropy of a training batch, 8192 positions, 65 characters") {
  // feedback.json's batch: sequence 128 x batch 64 x Tiny Shakespeare's 65 characters; and a large vocabulary.
  check_at_size("cross entropy [8192, 65]", {uniform64({128 * 64, 65}, 25, -6, 6), ids({128 * 64}, 65, 26)},
                [](const auto& v) { return cross_entropy(v[0], v[1]); });
  check_at_size("cross entropy [512, 32000]", {uniform64({512, 32000}, 27, -6, 6), ids({512}, 32000, 28)},
                [](const auto& v) { return cross_entropy(v[0], v[1]); });
}

}  // namespace
}  // namespace loom
