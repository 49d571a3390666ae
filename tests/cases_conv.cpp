// cases_conv.cpp: op-table cases for causal_conv1d, doctest cases for its
// errors, and a check of the fused kernels against the same convolution built
// from narrow / concat / mul / add.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "tests/test_util.h"
#include "engine/ops.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

// out[t, .., c] = bias[c] + sum_k w[c, k] * x[t-(K-1)+k, .., c], x[<0] = 0;
// a weight or bias with one row is shared by all channels.
Ref conv_ref(const Ref& x, const Ref& w, const Ref* bias) {
  const int64_t L = x.shape[0], C = x.shape.back(), Cw = w.shape[0], K = w.shape[1];
  Ref out(x.shape);
  if (L == 0) return out;
  const int64_t step = x.numel() / L;  // elements per time step
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t t = i / step, c = i % C, wc = Cw == 1 ? 0 : c;
    double s = bias ? bias->v[bias->numel() == 1 ? 0 : c] : 0.0;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t src = t - (K - 1) + k;
      if (src >= 0) s += w.at({wc, k}) * x.v[i - (t - src) * step];
    }
    out.v[i] = s;
  }
  return out;
}

void add_conv(std::vector<OpCase>& c, const std::string& name, InputSpec x, InputSpec w, bool with_bias) {
  std::vector<InputSpec> inputs{std::move(x), std::move(w)};
  if (with_bias) inputs.push_back(InputSpec({inputs[1].shape[0]}));
  c.push_back({name, inputs,
               [](const Xs& t) { return causal_conv1d(t[0], t[1], t.size() > 2 ? t[2] : Tensor()); },
               [](const Rs& r) { return conv_ref(r[0], r[1], r.size() > 2 ? &r[2] : nullptr); }});
}

}  // namespace

static CaseRegistrar conv_cases([](std::vector<OpCase>& c) {
  add_conv(c, "causal_conv1d K=3 per-channel weight + bias", InputSpec({5, 2, 4}), InputSpec({4, 3}), true);
  add_conv(c, "causal_conv1d shared [1,3] kernel + bias [1], 4-D x", InputSpec({6, 2, 3, 4}), InputSpec({1, 3}),
           true);
  add_conv(c, "causal_conv1d no bias", InputSpec({5, 3, 4}), InputSpec({4, 3}), false);
  add_conv(c, "causal_conv1d K=1", InputSpec({4, 2, 3}), InputSpec({3, 1}), true);
  add_conv(c, "causal_conv1d L < K", InputSpec({2, 3, 4}), InputSpec({4, 5}), true);
  add_conv(c, "causal_conv1d shared kernel, no bias, L < K", InputSpec({2, 2, 3}), InputSpec({1, 4}), false);
  add_conv(c, "causal_conv1d 2-D x [L, C]", InputSpec({7, 3}), InputSpec({3, 3}), true);
  add_conv(c, "causal_conv1d one channel", InputSpec({6, 2, 1}), InputSpec({1, 2}), true);
  add_conv(c, "causal_conv1d transposed x", InputSpec({4, 3, 5}).transposed(), InputSpec({5, 3}), true);
  add_conv(c, "causal_conv1d strided x", InputSpec({5, 2, 4}).strided(), InputSpec({4, 2}), true);
  add_conv(c, "causal_conv1d transposed weight", InputSpec({5, 2, 4}), InputSpec({4, 3}).transposed(), true);
  // The model's layout: x comes as [B, L, C] and is permuted to [L, B, C].
  c.push_back({"causal_conv1d x permuted from [B, L, C]",
               {InputSpec({2, 5, 3}), InputSpec({3, 3}), InputSpec({3})},
               [](const Xs& t) { return causal_conv1d(transpose(t[0], 0, 1), t[1], t[2]); },
               [](const Rs& r) { return conv_ref(swap_first_two_axes(r[0]), r[1], &r[2]); }});
});

// ---- errors ------------------------------------------------------------------------------

namespace {

}  // namespace

TEST_CASE("causal_conv1d errors name the op and the offending shapes") {
  const Tensor x = Tensor::zeros({5, 2, 4});
  const Tensor w = Tensor::zeros({4, 3}), b = Tensor::zeros({4});
  check_mentions(error_of([&] { causal_conv1d(x, Tensor::zeros({3, 3}), Tensor()); }),
                 {"causal_conv1d", "weight [3, 3]", "3 channels", "C = 4", "[5, 2, 4]"});
  check_mentions(error_of([&] { causal_conv1d(x, Tensor::zeros({4, 1, 3}), Tensor()); }),
                 {"causal_conv1d", "2-D", "[4, 1, 3]"});
  check_mentions(error_of([&] { causal_conv1d(x, w, Tensor::zeros({3})); }),
                 {"causal_conv1d", "bias [3]", "weight [4, 3]", "expected bias [4]"});
  check_mentions(error_of([&] { causal_conv1d(x, Tensor::zeros({1, 3}), b); }),
                 {"causal_conv1d", "bias [4]", "expected bias [1]"});
  check_mentions(error_of([&] { causal_conv1d(Tensor::zeros({5}), Tensor::zeros({1, 3}), Tensor()); }),
                 {"causal_conv1d", "at least 2 dims", "[5]"});
  check_mentions(error_of([&] { causal_conv1d(x, Tensor::zeros({4, 0}), Tensor()); }),
                 {"causal_conv1d", "K = 0", "[4, 0]"});
  check_mentions(error_of([&] { causal_conv1d(x, Tensor::zeros({4, 3}, DType::f64), Tensor()); }),
                 {"causal_conv1d", "dtype", "float64"});
  check_mentions(error_of([&] { causal_conv1d(x, Tensor(), Tensor()); }), {"causal_conv1d", "weight", "undefined"});
}

// ---- fused kernel vs composed ops -------------------------------------------------------

namespace {

// The same convolution from narrow / concat / mul / add: tap k reads x delayed by
// K-1-k steps, i.e. x shifted down the sequence axis with zeros in front.
Tensor conv_composed(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t L = x.size(0), K = w.size(1);
  Tensor y = mul(x, 0.0);
  for (int64_t k = 0; k < K; ++k) {
    const int64_t delay = K - 1 - k;
    if (delay >= L) continue;  // this tap reads only zeros
    Tensor shifted = x;
    if (delay > 0) {
      Shape zeros_shape = x.shape();
      zeros_shape[0] = delay;
      shifted = concat({Tensor::zeros(zeros_shape, x.dtype()), narrow(x, 0, 0, L - delay)}, 0);
    }
    // w[:, k] as [Cw]: broadcasts over the channel axis (a shared kernel as [1]).
    y = y + shifted * reshape(narrow(w, 1, k, 1), {w.size(0)});
  }
  return b.defined() ? y + b : y;
}

Tensor random_f64(const Shape& shape, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> v(shape_numel(shape));
  for (auto& e : v) e = u(rng);
  return Tensor::from_vector(v, shape);
}

double max_rel_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const Ref ra = Ref::from(a), rb = Ref::from(b);
  double m = 0.0;
  for (int64_t i = 0; i < ra.numel(); ++i)
    m = std::max(m, std::abs(ra.v[i] - rb.v[i]) / std::max(1.0, std::abs(rb.v[i])));
  return m;
}

struct ConvSetup {
  const char* name;
  Shape x, w;
  bool bias;
  bool x_grad, w_grad, b_grad;  // which inputs require grad
};

}  // namespace

// Big enough for several threads and several reduction chunks in the kernel.
TEST_CASE("causal_conv1d: fused kernels match the composed ops (float64)") {
  const ConvSetup setups[] = {
      {"per-channel + bias", {40, 6, 64}, {64, 3}, true, true, true, true},
      {"shared kernel + bias", {40, 2, 3, 64}, {1, 3}, true, true, true, true},
      {"no bias, K=4", {33, 5, 48}, {48, 4}, false, true, true, false},
      {"L < K", {3, 50, 16}, {16, 5}, true, true, true, true},
      {"weight grads only", {40, 6, 64}, {64, 3}, true, false, true, true},
      {"x grad only", {40, 6, 64}, {64, 3}, true, true, false, false},
  };
  std::mt19937_64 rng(11);
  for (const ConvSetup& s : setups) {
    INFO("setup: ", std::string(s.name));
    const Tensor x = random_f64(s.x, rng), w = random_f64(s.w, rng);
    const Tensor b = s.bias ? random_f64({s.w[0]}, rng) : Tensor();
    const Tensor r = random_f64(s.x, rng);  // the output's gradient

    auto run = [&](auto&& conv) {
      std::vector<Tensor> leaves{x.detach(), w.detach(), s.bias ? b.detach() : Tensor()};
      const bool wants[] = {s.x_grad, s.w_grad, s.b_grad};
      for (int i = 0; i < 3; ++i)
        if (wants[i] && leaves[i].defined()) leaves[i].requires_grad_();
      const Tensor y = conv(leaves[0], leaves[1], leaves[2]);
      y.backward(r);
      return std::vector<Tensor>{y, leaves[0].grad(), leaves[1].grad(), leaves[2].defined() ? leaves[2].grad() : Tensor()};
    };
    const auto fused = run([](const Tensor& a, const Tensor& k, const Tensor& c) { return causal_conv1d(a, k, c); });
    const auto composed = run(conv_composed);

    CHECK(max_rel_diff(fused[0], composed[0]) < 1e-12);
    const char* names[] = {"grad x", "grad weight", "grad bias"};
    for (int i = 1; i < 4; ++i) {
      INFO(std::string(names[i - 1]));
      REQUIRE(fused[i].defined() == composed[i].defined());
      if (fused[i].defined()) CHECK(max_rel_diff(fused[i], composed[i]) < 1e-12);
    }
    CHECK(fused[1].defined() == s.x_grad);
    CHECK(fused[2].defined() == s.w_grad);
  }
}

}  // namespace loom::test
