// test_runtime.cpp: the random number generator, thread-count independence and the kernel clock.
#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <cmath>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/philox_lanes.h"
#include "engine/kernel_clock.h"
#include "engine/ops.h"
#include "engine/philox.h"
#include "tests/fused_check.h"

namespace loom {

TEST_CASE("random: Philox-4x32-10 matches the published known-answer vectors") {
  // Random123's kat_vectors, every philox4x32 line with 10 rounds: counter (4
  // words), key (2 words) -> output (4 words). Zeros, ones, and the hex digits of pi.
  struct Kat {
    std::array<uint32_t, 4> counter;
    std::array<uint32_t, 2> key;
    std::array<uint32_t, 4> expected;
  };
  const Kat kats[] = {
      {{0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u},
       {0x00000000u, 0x00000000u},
       {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
       {0xffffffffu, 0xffffffffu},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const Kat& kat : kats) {
    INFO("counter word 0 ", kat.counter[0], ", key word 0 ", kat.key[0]);
    CHECK(philox4x32_10(kat.counter, kat.key) == kat.expected);
  }
  // The fills' form (a 64-bit counter and key, upper counter words 0) is the same
  // function: the all-zeros vector through it, and a counter and key split into words.
  CHECK(philox4x32(0, 0) == kats[0].expected);
  CHECK(philox4x32(0x85a308d3243f6a88ull, 0x299f31d0a4093822ull) ==
        philox4x32_10({0x243f6a88u, 0x85a308d3u, 0u, 0u}, {0xa4093822u, 0x299f31d0u}));
}

// The CPU's vector forms (engine/cpu/philox_lanes.h: 64, 32 and 16 blocks at a
// time in AVX-512 builds, then 8 in AVX2 ones) against the plain per-block
// function: whole groups, partial ones, and counters whose low word wraps inside a
// group (the carry reaches the second counter word).
TEST_CASE("philox_words gives philox4x32's words, block by block") {
  for (const uint64_t start : {0ull, 0xfffffffcull, 0x85a308d3243f6a88ull, 0xfffffffffffffffaull})
    for (const uint64_t blocks : {0ull, 1ull, 7ull, 8ull, 9ull, 15ull, 16ull, 17ull, 24ull, 31ull, 32ull, 33ull, 48ull,
                                  63ull, 64ull, 65ull, 120ull, 1003ull}) {
      INFO("start ", start, ", blocks ", blocks);
      const uint64_t key = 0x299f31d0a4093822ull ^ start;
      std::vector<uint32_t> words(4 * blocks + 4, 0xdeadbeefu);
      cpu::philox_words(words.data(), start, blocks, key);
      bool same = true;
      for (uint64_t b = 0; b < blocks; ++b) {
        const auto expected = philox4x32(start + b, key);
        for (int w = 0; w < 4; ++w) same = same && words[4 * b + w] == expected[w];
      }
      CHECK(same);
      CHECK(words[4 * blocks] == 0xdeadbeefu);  // nothing written past the last block
    }
}

TEST_CASE("random: the same seed gives the same numbers, whatever the thread count") {
  const int threads = num_threads();
  Generator g1(42);
  set_num_threads(1);
  const auto one = uniform({100000}, 0, 1, g1).to_vector<float>();
  set_num_threads(std::max(threads, 2));
  Generator g2(42);
  const auto many = uniform({100000}, 0, 1, g2).to_vector<float>();
  set_num_threads(threads);
  CHECK(one == many);
  Generator g3(43);
  CHECK(uniform({100000}, 0, 1, g3).to_vector<float>() != one);
}

TEST_CASE("random: successive fills continue the stream; state restores it") {
  Generator g(5);
  const auto first = normal({10}, 0, 1, g, DType::f64).to_vector<double>();
  const uint64_t offset = g.offset();
  const auto second = normal({10}, 0, 1, g, DType::f64).to_vector<double>();
  CHECK(first != second);
  Generator resumed(0);
  resumed.set_state(5, offset);
  CHECK(normal({10}, 0, 1, resumed, DType::f64).to_vector<double>() == second);
}

TEST_CASE("random: distributions have the right moments") {
  Generator g(11);
  const int64_t n = 400000;
  const auto u = uniform({n}, -2, 4, g, DType::f64).to_vector<double>();
  double mean = 0, lo = 1e9, hi = -1e9;
  for (double v : u) {
    mean += v / n;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  CHECK(mean == doctest::Approx(1.0).epsilon(0.01));
  CHECK(lo >= -2.0);
  CHECK(hi < 4.0);

  const auto z = normal({n}, 3, 2, g, DType::f64).to_vector<double>();
  double m = 0, var = 0;
  for (double v : z) m += v / n;
  for (double v : z) var += (v - m) * (v - m) / n;
  CHECK(m == doctest::Approx(3.0).epsilon(0.01));
  CHECK(std::sqrt(var) == doctest::Approx(2.0).epsilon(0.01));

  const auto b = bernoulli({n}, 0.3, g, DType::f64).to_vector<double>();
  double ones = 0;
  int64_t not_binary = 0;
  for (double v : b) {
    not_binary += v != 0.0 && v != 1.0;
    ones += v / n;
  }
  CHECK(not_binary == 0);
  CHECK(ones == doctest::Approx(0.3).epsilon(0.02));
}

TEST_CASE("dropout: drops about p of the elements and keeps the expectation") {
  Generator g(3);
  const Tensor x = Tensor::ones({200000}, DType::f64);
  const auto y = dropout(x, 0.25, g).to_vector<double>();
  double zeros = 0, total = 0;
  int64_t badly_scaled = 0;
  for (double v : y) {
    if (v == 0.0) zeros += 1;
    else badly_scaled += std::abs(v - 1.0 / 0.75) > 1e-12;
    total += v;
  }
  CHECK(badly_scaled == 0);
  CHECK(zeros / y.size() == doctest::Approx(0.25).epsilon(0.02));
  CHECK(total / y.size() == doctest::Approx(1.0).epsilon(0.01));
  CHECK(dropout(x, 0.25, g, /*training=*/false).same_storage(x));
}

TEST_CASE("dropout: the mask drawn in the kernel is bernoulli(1 - p) times 1/(1 - p), bit for bit, forward and "
          "backward, on any layout and thread count") {
  const int threads = num_threads();
  const double p = 0.3;
  // 37 x 1001 elements: a partial last block of 4, and enough blocks to split over threads.
  Generator init(9);
  const Tensor base = uniform({1001, 37}, -2, 2, init);
  const Tensor x = transpose(base, 0, 1);  // a non-contiguous view: the mask follows logical order
  const Tensor g = uniform({37, 1001}, -1, 1, init);
  // The composition dropout replaced: the bernoulli mask of the same stream, scaled, multiplied.
  Generator reference_gen(21);
  const Tensor mask = bernoulli({37, 1001}, 1 - p, reference_gen) * static_cast<float>(1 / (1 - p));
  const auto want_out = (contiguous(x) * mask).to_vector<float>();
  const auto want_grad = (g * mask).to_vector<float>();
  for (int t : {1, std::max(threads, 2)}) {
    set_num_threads(t);
    Generator gen(21);
    const Tensor leaf = x.detach().requires_grad_();
    const Tensor out = dropout(leaf, p, gen);
    sum(out * g).backward();
    CHECK(out.to_vector<float>() == want_out);
    CHECK(leaf.grad().to_vector<float>() == want_grad);
    CHECK(gen.offset() == reference_gen.offset());  // the stream moves on as a fill would
  }
  set_num_threads(threads);
}

TEST_CASE("dropout: the kernel's keep bits are the mask element by element, and the backward's products from "
          "them are the redrawn mask's, bit for bit") {
  // Reference bits: a plain loop over Philox words. Reference backward: the kernel
  // without bits on the gradient, the mask drawn again (the former backward).
  // The gradient holds negatives (a dropped one gives -0), infinities and a NaN.
  const uint64_t seed = 77, offset = 5;
  const double p = 0.4;
  const uint64_t threshold = dropout_keep_threshold(1 - p);
  Backend& cpu = backend_for(Device::cpu);
  const int threads = num_threads();
  for (const int64_t n : {int64_t{1}, int64_t{63}, int64_t{64}, int64_t{65}, int64_t{1023}, int64_t{1024},
                          int64_t{1025}, int64_t{40000}}) {
    for (const DType dtype : {DType::f32, DType::f64}) {
      INFO("n ", n, ", ", std::string(dtype_name(dtype)));
      Generator gen(3);
      const Tensor x = uniform({n}, -2, 2, gen, dtype);
      Tensor g = uniform({n}, -1, 1, gen, dtype);
      std::vector<double> special = g.to(DType::f64).to_vector<double>();
      special[0] = INFINITY;
      if (n > 2) special[n / 2] = -INFINITY, special[n - 1] = NAN;
      g = Tensor::from_vector(special, {n}).to(dtype);
      std::vector<int64_t> expected_bits(static_cast<size_t>((n + 63) / 64), 0);
      for (int64_t i = 0; i < n; ++i)
        if (philox4x32(offset + static_cast<uint64_t>(i / 4), seed)[i % 4] < threshold)
          expected_bits[static_cast<size_t>(i / 64)] |= int64_t{1} << (i % 64);
      const Tensor redrawn = Tensor::empty({n}, dtype);
      cpu.dropout(g, redrawn, p, seed, offset, Tensor(), false);
      for (int t : {1, std::max(threads, 2)}) {
        set_num_threads(t);
        const Tensor bits = Tensor::full({(n + 63) / 64}, -1.0, DType::i64);  // every bit set beforehand
        const Tensor out = Tensor::empty({n}, dtype), out_without_bits = Tensor::empty({n}, dtype);
        cpu.dropout(x, out, p, seed, offset, bits, false);
        cpu.dropout(x, out_without_bits, p, seed, offset, Tensor(), false);
        CHECK(bits.to_vector<int64_t>() == expected_bits);
        CHECK(test::same_bits(out, out_without_bits));
        const Tensor grad = Tensor::empty({n}, dtype);
        cpu.dropout_backward(g, bits, p, Tensor(), grad);
        CHECK(test::same_bits(grad, redrawn));
      }
      set_num_threads(threads);
    }
  }
}

TEST_CASE("relu_dropout: dropout(relu(x)) bit for bit, forward and backward, the same draws, in both dtypes") {
  // The composition is the reference: relu, then dropout, then backward through
  // both. x plants ±0 and NaN (relu gives +0 for all three), and the gradient
  // negatives (a dropped one is -0) and infinities.
  const double p = 0.3;
  const int threads = num_threads();
  for (const DType dtype : {DType::f32, DType::f64}) {
    INFO(std::string(dtype_name(dtype)));
    Generator init(4);
    std::vector<double> xs = uniform({37, 101}, -2, 2, init, DType::f64).to_vector<double>();
    xs[0] = 0.0, xs[1] = -0.0, xs[2] = NAN, xs[3] = 1e-30;
    std::vector<double> gs = uniform({37, 101}, -1, 1, init, DType::f64).to_vector<double>();
    gs[4] = INFINITY, gs[5] = -INFINITY;
    const Tensor x = Tensor::from_vector(xs, {37, 101}).to(dtype), g = Tensor::from_vector(gs, {37, 101}).to(dtype);
    Generator reference_gen(31);
    const Tensor ref_leaf = x.detach().requires_grad_();
    const Tensor ref_out = dropout(relu(ref_leaf), p, reference_gen);
    ref_out.backward(g);
    for (int t : {1, std::max(threads, 2)}) {
      set_num_threads(t);
      Generator gen(31);
      const Tensor leaf = x.detach().requires_grad_();
      const Tensor out = relu_dropout(leaf, p, gen);
      out.backward(g);
      CHECK(test::same_bits(out, ref_out));
      CHECK(test::same_bits(leaf.grad(), ref_leaf.grad()));
      CHECK(gen.offset() == reference_gen.offset());
      Generator unused(31);
      CHECK(test::same_bits(relu_dropout(x, p, unused, /*training=*/false), relu(x)));
    }
    set_num_threads(threads);
  }
}

TEST_CASE("dropout: the integer thresholds keep exactly the words bernoulli(keep) keeps, at its edge") {
  // The reference is sample_bernoulli's comparison in double; the words tried are
  // the ones on either side of keep·2^32, where an off-by-one would show.
  for (const double keep : {0.0, 1e-10, 0.1, 0.5, 0.7, 0.75, 0.9, 1.0 - 0x1p-32, 1.0 - 0x1p-33, 1.0}) {
    const uint64_t threshold = dropout_keep_threshold(keep);
    CHECK(threshold <= (uint64_t{1} << 32));
    const double edge = std::floor(keep * 4294967296.0);
    for (double w = edge - 2; w <= edge + 2; ++w) {
      if (w < 0 || w > 4294967295.0) continue;
      const uint32_t bits = static_cast<uint32_t>(w);
      INFO("keep ", keep, ", word ", bits);
      CHECK((dropout_factor(bits, threshold, 1.0f) != 0.0f) == (sample_bernoulli(bits, keep) == 1.0));
      if (keep > 0)  // the 32-bit form the CPU kernels use: defined for keep > 0 (p < 1)
        CHECK((dropout_factor_32(bits, dropout_last_kept(keep), 1.0f) != 0.0f) == (sample_bernoulli(bits, keep) == 1.0));
    }
  }
}

TEST_CASE("kernel clock: times each kind of kernel, the outermost one only, and nothing when off") {
  Generator gen(3);
  const Tensor a = uniform({256, 256}, -1, 1, gen), b = uniform({256, 256}, -1, 1, gen);
  const Tensor q = uniform({16, 2, 2, 8}, 0, 1, gen), v = uniform({16, 2, 2, 8}, -1, 1, gen);
  const Tensor beta = uniform({16, 2, 2, 1}, 0, 1, gen);
  auto seconds = [](KernelKind kind) { return kernel_clock_seconds(kind); };

  set_kernel_clock(true);
  set_kernel_clock(false);
  (void)matmul(a, b);
  CHECK(seconds(KernelKind::gemm) == 0);

  set_kernel_clock(true);
  const auto start = std::chrono::steady_clock::now();
  (void)matmul(a, b);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(seconds(KernelKind::gemm) > 0);
  CHECK(seconds(KernelKind::gemm) <= wall);
  CHECK(seconds(KernelKind::attention) == 0);
  CHECK(seconds(KernelKind::recurrence) == 0);

  (void)delta_rule(q, q, v, beta);
  CHECK(seconds(KernelKind::recurrence) > 0);

  // A GEMM inside a timed attention kernel counts as attention only.
  const double gemm_before = seconds(KernelKind::gemm);
  {
    const TimedKernel outer(KernelKind::attention);
    (void)matmul(a, b);
  }
  CHECK(seconds(KernelKind::attention) > 0);
  CHECK(seconds(KernelKind::gemm) == gemm_before);
  set_kernel_clock(false);
}

}  // namespace loom
