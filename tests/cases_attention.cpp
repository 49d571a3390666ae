// cases_attention.cpp: op-table cases for fused attention against a naive double
// loop, the fused kernels against softmax(masked_fill(q·kᵀ·scale))·v built from
// engine ops, dropout (mask regenerated identically in the backward, expectation
// kept), and error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "engine/device.h"
#include "engine/ops.h"
#include "tests/fused_check.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

// out[i, b, h, :] = sum_j softmax_j(scale · q[i, b, h] · k[j, b, h]) v[j, b, h, :],
// with the causal mask keeping j <= Lk - Lq + i.
Ref attention_ref(const Ref& q, const Ref& k, const Ref& v, double scale, bool causal) {
  const int64_t Lq = q.shape[0], B = q.shape[1], H = q.shape[2], D = q.shape[3];
  const int64_t Lk = k.shape[0], Dv = v.shape[3];
  Ref out({Lq, B, H, Dv});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Lq; ++i) {
        const int64_t n = causal ? Lk - Lq + i + 1 : Lk;
        std::vector<double> s(n);
        double m = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          double dot = 0.0;
          for (int64_t c = 0; c < D; ++c) dot += q.at({i, b, h, c}) * k.at({j, b, h, c});
          s[j] = scale * dot;
          m = std::max(m, s[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < n; ++j) sum += std::exp(s[j] - m);
        for (int64_t c = 0; c < Dv; ++c) {
          double o = 0.0;
          for (int64_t j = 0; j < n; ++j) o += std::exp(s[j] - m) / sum * v.at({j, b, h, c});
          out.at({i, b, h, c}) = o;
        }
      }
  return out;
}

void add_attention(std::vector<OpCase>& c, const std::string& variant, InputSpec q, InputSpec k, InputSpec v,
                   double scale, bool causal) {
  c.push_back({"attention " + variant + (causal ? " causal" : ""),
               {std::move(q), std::move(k), std::move(v)},
               [scale, causal](const Xs& x) { return attention(x[0], x[1], x[2], scale, causal); },
               [scale, causal](const Rs& r) { return attention_ref(r[0], r[1], r[2], scale, causal); }});
}

}  // namespace

static CaseRegistrar attention_cases([](std::vector<OpCase>& c) {
  for (bool causal : {false, true}) {
    add_attention(c, "Lq = Lk [5,2,3,4]", InputSpec({5, 2, 3, 4}), InputSpec({5, 2, 3, 4}), InputSpec({5, 2, 3, 4}),
                  0.5, causal);
    add_attention(c, "Lq < Lk [3,2,2,4] over [6,2,2,4]", InputSpec({3, 2, 2, 4}), InputSpec({6, 2, 2, 4}),
                  InputSpec({6, 2, 2, 4}), 1.0 / 2.0, causal);
    add_attention(c, "Dv != D, scale 1.3", InputSpec({4, 1, 2, 3}), InputSpec({4, 1, 2, 3}), InputSpec({4, 1, 2, 5}),
                  1.3, causal);
    add_attention(c, "one query over 5 keys", InputSpec({1, 2, 2, 3}), InputSpec({5, 2, 2, 3}),
                  InputSpec({5, 2, 2, 3}), 0.7, causal);
    // Transposed q/k: the features are not contiguous, the op makes them so.
    add_attention(c, "transposed q and k", InputSpec({4, 2, 3, 3}).transposed(), InputSpec({4, 2, 3, 3}).transposed(),
                  InputSpec({4, 2, 3, 2}), 0.6, causal);
    // Strided: rows read in place with a wider row stride and an offset.
    add_attention(c, "strided q, k, v", InputSpec({4, 2, 2, 3}).strided(), InputSpec({5, 2, 2, 3}).strided(),
                  InputSpec({5, 2, 2, 2}).strided(), 0.6, causal);
    // More than one block of 64 query rows.
    add_attention(c, "two query blocks [70,1,1,2]", InputSpec({70, 1, 1, 2}), InputSpec({70, 1, 1, 2}),
                  InputSpec({70, 1, 1, 2}), 1.0, causal);
  }
  // Scores of several hundred: exp overflows without the max shift (float32 too).
  add_attention(c, "large scores", InputSpec({4, 1, 2, 4}).range(-10, 10), InputSpec({4, 1, 2, 4}).range(-10, 10),
                InputSpec({4, 1, 2, 4}), 1.0, true);
  add_attention(c, "no queries [0,2,2,3]", InputSpec({0, 2, 2, 3}), InputSpec({4, 2, 2, 3}), InputSpec({4, 2, 2, 3}),
                0.5, false);
  add_attention(c, "one query, one key [1,1,1,3]", InputSpec({1, 1, 1, 3}), InputSpec({1, 1, 1, 3}),
                InputSpec({1, 1, 1, 2}), 0.6, true);
  // Cross attention: more queries than keys.
  add_attention(c, "Lq > Lk [7,2,1,3] over [4,2,1,3]", InputSpec({7, 2, 1, 3}), InputSpec({4, 2, 1, 3}),
                InputSpec({4, 2, 1, 2}), 0.6, false);
  // The model's layout seen from a batch-first tensor: q [B, L, H, D] transposed to [L, B, H, D].
  c.push_back({"attention q, k, v permuted from [B, L, H, D] causal",
               {InputSpec({2, 5, 2, 3}), InputSpec({2, 5, 2, 3}), InputSpec({2, 5, 2, 3})},
               [](const Xs& x) {
                 return attention(transpose(x[0], 0, 1), transpose(x[1], 0, 1), transpose(x[2], 0, 1), 0.5, true);
               },
               [](const Rs& r) {
                 return attention_ref(swap_first_two_axes(r[0]), swap_first_two_axes(r[1]),
                                      swap_first_two_axes(r[2]), 0.5, true);
               }});
});

// ---- fused kernels vs the same math composed of engine ops -------------------------------

namespace {

// [Lq, Lk] with 1 where query i must not see key j (j > Lk - Lq + i).
Tensor causal_mask(int64_t Lq, int64_t Lk) {
  std::vector<double> m(Lq * Lk, 0.0);
  for (int64_t i = 0; i < Lq; ++i)
    for (int64_t j = Lk - Lq + i + 1; j < Lk; ++j) m[i * Lk + j] = 1.0;
  return Tensor::from_vector(m, {Lq, Lk});
}

// softmax(masked_fill(q·kᵀ·scale)) as [B, H, Lq, Lk].
Tensor composed_probabilities(const Tensor& q, const Tensor& k, double scale, bool causal) {
  const Tensor qh = permute(q, {1, 2, 0, 3});  // [B, H, Lq, D]
  const Tensor kt = permute(k, {1, 2, 3, 0});  // [B, H, D, Lk]
  Tensor scores = matmul(qh, kt) * scale;
  if (causal) scores = masked_fill(scores, causal_mask(q.size(0), k.size(0)), -INFINITY);
  return softmax(scores, -1);
}

// probabilities [B, H, Lq, Lk] · v -> [Lq, B, H, Dv].
Tensor apply_to_values(const Tensor& probabilities, const Tensor& v) {
  return permute(matmul(probabilities, permute(v, {1, 2, 0, 3})), {2, 0, 1, 3});
}

Tensor composed_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal) {
  return apply_to_values(composed_probabilities(q, k, scale, causal), v);
}

struct Setup {
  int64_t Lq, Lk, B, H, D, Dv;
};

// v[j, b, h, :] = one-hot(j): attention with these values returns the (dropped) probabilities.
Tensor identity_values(int64_t Lk, int64_t B, int64_t H) {
  std::vector<double> e(Lk * B * H * Lk, 0.0);
  for (int64_t j = 0; j < Lk; ++j)
    for (int64_t bh = 0; bh < B * H; ++bh) e[(j * B * H + bh) * Lk + j] = 1.0;
  return Tensor::from_vector(e, {Lk, B, H, Lk});
}

}  // namespace

TEST_CASE("attention: fused kernels match the composed ops in float64") {
  // The larger setups spread (batch, head) pairs over threads and use several query blocks.
  const Setup setups[] = {{7, 7, 3, 2, 8, 8}, {150, 150, 2, 4, 16, 16}, {40, 130, 2, 3, 8, 5}, {1, 33, 4, 2, 8, 8}};
  for (const Setup& s : setups)
    for (bool causal : {false, true}) {
      INFO("Lq ", s.Lq, ", Lk ", s.Lk, ", B ", s.B, ", H ", s.H, ", D ", s.D, ", Dv ", s.Dv, ", causal ", causal);
      const Xs x = {random_f64({s.Lq, s.B, s.H, s.D}, 1), random_f64({s.Lk, s.B, s.H, s.D}, 2),
                    random_f64({s.Lk, s.B, s.H, s.Dv}, 3)};
      const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
      check_same(evaluate([&](const Xs& t) { return attention(t[0], t[1], t[2], scale, causal); }, x),
                 evaluate([&](const Xs& t) { return composed_attention(t[0], t[1], t[2], scale, causal); }, x),
                 1e-10);
    }
}

TEST_CASE("attention: float32 forward and backward agree with float64") {
  // The walker gradient-checks float64 only; this covers the float32 backward.
  const Xs x64 = {random_f64({90, 2, 2, 16}, 4, -1, 1), random_f64({90, 2, 2, 16}, 5, -1, 1),
                  random_f64({90, 2, 2, 16}, 6, -1, 1)};
  Xs x32;
  for (const Tensor& t : x64) x32.push_back(t.to(DType::f32));
  const Evaluated e64 = evaluate([](const Xs& t) { return attention(t[0], t[1], t[2], 0.25, true); }, x64);
  const Evaluated e32 =
      evaluate([](const Xs& t) { return cast(attention(t[0], t[1], t[2], 0.25, true), DType::f64); }, x32);
  check_same(e32, e64, 1e-5);
}

TEST_CASE("attention: dropout mask is regenerated identically by the backward") {
  const int64_t Lq = 70, Lk = 70, B = 2, H = 3, D = 8, Dv = 6;
  const double p = 0.3, scale = 0.35;
  const Xs x = {random_f64({Lq, B, H, D}, 7, -1, 1), random_f64({Lk, B, H, D}, 8, -1, 1),
                random_f64({Lk, B, H, Dv}, 9, -1, 1)};
  for (bool causal : {false, true}) {
    INFO("causal ", causal);
    // The dropped probabilities drawn from this generator state, read through one-hot values.
    const Generator start(42);
    Generator gen = start;
    const Tensor dropped = attention(x[0], x[1], identity_values(Lk, B, H), scale, causal, p, &gen);  // [Lq,B,H,Lk]
    const Tensor keep = gt(permute(dropped, {1, 2, 0, 3}), 0.0);  // [B, H, Lq, Lk]

    // The documented layout (engine/backend.h): probability (b, h, i, j) is kept when
    // word e % 4 of Philox counter offset + e / 4, e = ((b·H + h)·Lq + i)·Lk + j, is
    // below 1 - p. Another backend must reproduce exactly this.
    const std::vector<double> kept = keep.to_vector<double>();
    int64_t mismatches = 0;
    for (int64_t e = 0; e < B * H * Lq * Lk; ++e) {
      const int64_t i = (e / Lk) % Lq, j = e % Lk;
      const bool visible = !causal || j <= Lk - Lq + i;
      const uint32_t bits = philox4x32(start.offset() + static_cast<uint64_t>(e) / 4, start.seed())[e % 4];
      mismatches += (visible && uint_to_unit(bits) < 1.0 - p) != (kept[e] != 0.0);
    }
    CHECK(mismatches == 0);

    // The composition with that mask must match the fused op run from the same state,
    // forward and backward: the backward rebuilt the same mask.
    const Evaluated fused = evaluate(
        [&](const Xs& t) {
          Generator g = start;
          return attention(t[0], t[1], t[2], scale, causal, p, &g);
        },
        x);
    const Evaluated composed = evaluate(
        [&](const Xs& t) {
          return apply_to_values(composed_probabilities(t[0], t[1], scale, causal) * keep / (1.0 - p), t[2]);
        },
        x);
    check_same(fused, composed, 1e-10);

    // About 1 - p of the visible probabilities are kept.
    double n_visible = 0;
    for (int64_t i = 0; i < Lq; ++i) n_visible += static_cast<double>(B * H * (causal ? Lk - Lq + i + 1 : Lk));
    const double n_kept = sum(keep).item();
    INFO("visible ", n_visible, ", kept ", n_kept);
    CHECK(n_visible > 5000);
    CHECK(std::abs(n_kept / n_visible - (1.0 - p)) < 0.03);
    // The generator moved past the counters the op used: the next draw differs.
    Generator next = gen;
    const Tensor again = attention(x[0], x[1], identity_values(Lk, B, H), scale, causal, p, &next);
    CHECK(sum(eq(again, dropped)).item() < static_cast<double>(dropped.numel()));
  }
}

TEST_CASE("attention: dropout keeps the expectation") {
  const int64_t L = 8, B = 1, H = 2, D = 4, Dv = 3;
  const Tensor q = random_f64({L, B, H, D}, 10, -1, 1), k = random_f64({L, B, H, D}, 11, -1, 1);
  const Tensor v = random_f64({L, B, H, Dv}, 12, 1, 2);  // positive: a missing 1/(1-p) shows as a shift
  const Tensor exact = attention(q, k, v, 0.5, true);
  Generator gen(5);
  const int draws = 2000;
  Tensor total = Tensor::zeros(exact.shape(), DType::f64);
  for (int d = 0; d < draws; ++d) total = total + attention(q, k, v, 0.5, true, 0.2, &gen);
  const std::vector<double> mean = (total / draws).to_vector<double>(), want = exact.to_vector<double>();
  double worst = 0.0;
  for (size_t i = 0; i < mean.size(); ++i) worst = std::max(worst, std::abs(mean[i] - want[i]));
  CHECK(worst < 0.05);
}

TEST_CASE("attention: dropout does not depend on the thread count") {
  const Xs x = {random_f64({64, 4, 4, 16}, 13), random_f64({64, 4, 4, 16}, 14), random_f64({64, 4, 4, 16}, 15)};
  const int threads = num_threads();
  auto run = [&](int n) {
    set_num_threads(n);
    Generator gen(3);
    return attention(x[0], x[1], x[2], 0.25, true, 0.5, &gen).to_vector<double>();
  };
  const auto one = run(1), two = run(2);
  set_num_threads(threads);
  CHECK(one == two);
}

// The CPU kernels split a row's softmax into vector lanes (Eigen's exp, the
// sums) in per-thread buffers: every thread must split it alike. 9 pairs share
// 2 threads unevenly, and rows of 77 keys leave a head or a tail to every split.
TEST_CASE("attention: float32 outputs and gradients do not depend on the thread count") {
  Generator data(21);
  const Tensor q = uniform({77, 3, 3, 24}, -1, 1, data), k = uniform({77, 3, 3, 24}, -1, 1, data);
  const Tensor v = uniform({77, 3, 3, 24}, -1, 1, data), g = uniform({77, 3, 3, 24}, -1, 1, data);
  const int threads = num_threads();
  auto run = [&](int n) {
    set_num_threads(n);
    const Tensor lq = q.detach().requires_grad_(), lk = k.detach().requires_grad_(), lv = v.detach().requires_grad_();
    Generator gen(5);
    const Tensor out = attention(lq, lk, lv, 0.2, true, 0.1, &gen);
    sum(out * g).backward();
    return std::vector<std::vector<float>>{out.to_vector<float>(), lq.grad().to_vector<float>(),
                                           lk.grad().to_vector<float>(), lv.grad().to_vector<float>()};
  };
  const auto one = run(1), two = run(2);
  set_num_threads(threads);
  CHECK(one[0] == two[0]);
  CHECK(one[1] == two[1]);
  CHECK(one[2] == two[2]);
  CHECK(one[3] == two[3]);
}

TEST_CASE("attention: errors name the op and the shapes") {
  const Tensor q = Tensor::zeros({4, 2, 3, 8}), k = Tensor::zeros({6, 2, 3, 8}), v = Tensor::zeros({6, 2, 3, 5});
  std::string msg = error_of([&] { attention(Tensor::zeros({4, 2, 8}), k, v, 1.0, false); });
  CHECK(contains(msg, "attention"));
  CHECK(contains(msg, "4-D"));
  CHECK(contains(msg, "[4, 2, 8]"));
  msg = error_of([&] { attention(q, Tensor::zeros({6, 2, 3, 7}), v, 1.0, false); });
  CHECK(contains(msg, "feature size"));
  CHECK(contains(msg, "k [6, 2, 3, 7]"));
  msg = error_of([&] { attention(q, k, Tensor::zeros({5, 2, 3, 5}), 1.0, false); });
  CHECK(contains(msg, "same length"));
  CHECK(contains(msg, "v [5, 2, 3, 5]"));
  msg = error_of([&] { attention(q, Tensor::zeros({6, 1, 3, 8}), v, 1.0, false); });
  CHECK(contains(msg, "batch and heads"));
  msg = error_of([&] { attention(Tensor::zeros({7, 2, 3, 8}), k, v, 1.0, true); });
  CHECK(contains(msg, "Lq <= Lk"));
  CHECK(contains(msg, "q [7, 2, 3, 8]"));
  msg = error_of([&] { attention(q, k, v, 1.0, false, 0.1); });
  CHECK(contains(msg, "generator"));
  Generator gen;
  msg = error_of([&] { attention(q, k, v, 1.0, false, 1.0, &gen); });
  CHECK(contains(msg, "dropout probability 1"));
  msg = error_of([&] { attention(q, k.to(DType::f64), v, 1.0, false); });
  CHECK(contains(msg, "dtype"));
  CHECK(contains(msg, "float64"));
  msg = error_of([&] { attention(q, Tensor::zeros({0, 2, 3, 8}), Tensor::zeros({0, 2, 3, 5}), 1.0, false); });
  CHECK(contains(msg, "no keys"));
}

}  // namespace loom::test
