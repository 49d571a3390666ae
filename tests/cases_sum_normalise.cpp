// cases_sum_normalise.cpp: op-table cases for the fused sum normalisation (and
// its ELU+1 form) against naive double loops, the fused ops against the
// compositions the models used before them (bit for bit, forward and
// backward), what the backward keeps, and the error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>

#include "autodiff/node.h"
#include "engine/ops.h"
#include "tests/fused_check.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

// ---- reference: the definition, as plain double loops --------------------------------

// Row by row over the last axis: e = x or ELU(x) + 1, out = e / (Σ e + eps).
Ref normalise_ref(const Ref& x, double eps, bool elu_plus_one) {
  const int64_t n = x.shape.back(), rows = x.numel() / n;
  Ref out(x.shape);
  for (int64_t row = 0; row < rows; ++row) {
    std::vector<double> e(n);
    double total = eps;
    for (int64_t j = 0; j < n; ++j) {
      const double v = x.v[row * n + j];
      e[j] = elu_plus_one ? (v > 0.0 ? v : std::expm1(v)) + 1.0 : v;
      total += e[j];
    }
    for (int64_t j = 0; j < n; ++j) out.v[row * n + j] = e[j] / total;
  }
  return out;
}

void add_sum_normalise(std::vector<OpCase>& c, const std::string& name, InputSpec x, double eps) {
  // Positive entries, as the feature maps give it: the sums stay away from 0.
  c.push_back({name, {std::move(x.range(0.1, 2.0))}, [eps](const Xs& t) { return sum_normalise(t[0], eps); },
               [eps](const Rs& r) { return normalise_ref(r[0], eps, false); }});
}

// |x| >= 0.1 keeps the central differences off x = 0, where ELU's second derivative jumps.
void add_elu_plus_one(std::vector<OpCase>& c, const std::string& name, InputSpec x, double eps) {
  c.push_back({name, {std::move(x.range(-3, 3).nonzero())},
               [eps](const Xs& t) { return elu_plus_one_normalised(t[0], eps); },
               [eps](const Rs& r) { return normalise_ref(r[0], eps, true); }});
}

}  // namespace

static CaseRegistrar sum_normalise_cases([](std::vector<OpCase>& c) {
  add_sum_normalise(c, "sum_normalise [3, 4]", InputSpec({3, 4}), 1e-6);
  add_sum_normalise(c, "sum_normalise eps 0.5 [2, 3, 5]", InputSpec({2, 3, 5}), 0.5);
  add_sum_normalise(c, "sum_normalise rank 1 [6] eps 0", InputSpec({6}), 0.0);
  add_sum_normalise(c, "sum_normalise n=1 [5, 1] eps 0.5", InputSpec({5, 1}), 0.5);
  add_sum_normalise(c, "sum_normalise transposed x [3, 4, 5]", InputSpec({3, 4, 5}).transposed(), 1e-6);
  add_elu_plus_one(c, "elu_plus_one_normalised [3, 4]", InputSpec({3, 4}), 1e-6);
  add_elu_plus_one(c, "elu_plus_one_normalised rank 4 [2, 2, 3, 4] eps 0.25", InputSpec({2, 2, 3, 4}), 0.25);
  add_elu_plus_one(c, "elu_plus_one_normalised n=1 [4, 1] eps 0.5", InputSpec({4, 1}), 0.5);
  add_elu_plus_one(c, "elu_plus_one_normalised strided x [4, 6]", InputSpec({4, 6}).strided(), 1e-6);
});

// ---- the fused ops against the compositions: the same bits -------------------------

namespace {

// The compositions the models wrote before the fused op (models/families/fast_weights.cpp).
Tensor sum_normalise_composed(const Tensor& phi, double eps) { return phi / (sum(phi, {-1}, true) + eps); }
Tensor elu_plus_one_composed(const Tensor& x, double eps) { return sum_normalise_composed(elu(x) + 1.0, eps); }

struct Run {
  Tensor out, grad;
};

// f's output and the gradient of sum(f(x) · W), W fixed, all in x's dtype.
Run run(const Tensor& x_values, double eps, const std::function<Tensor(const Tensor&, double)>& f) {
  const Tensor x = clone(x_values).requires_grad_();
  const Tensor out = f(x, eps);
  sum(out * random_f64(out.shape(), 77).to(x.dtype())).backward();
  return {out.detach(), x.grad()};
}

// Values in [-4, 4] with the edges of ELU+1 planted: ±0, tiny positives whose
// x + 1 rounds to 1, large negatives whose e^x is 0 or subnormal, large positives.
Tensor edgy_values(const Shape& shape, DType dtype) {
  std::vector<double> v = random_f64(shape, 31, -4.0, 4.0).to_vector<double>();
  const double planted[] = {0.0, -0.0, 1e-9, 3e-8, -1e-9, -90.0, -150.0, 60.0, 1.0, -1.0};
  for (size_t i = 0; i < v.size(); i += 3) v[i] = planted[(i / 3) % std::size(planted)];
  return Tensor::from_vector(v, shape).to(dtype);
}

}  // namespace

TEST_CASE("sum_normalise: the fused ops give the compositions' output and gradient bit for bit") {
  const Shape shapes[] = {{7}, {5, 1}, {9, 16}, {64, 2, 4, 32}, {33, 3, 65}};
  for (const Shape& shape : shapes) {
    for (DType dtype : {DType::f32, DType::f64}) {
      for (double eps : {1e-6, 0.0, 0.5}) {
        INFO("shape ", shape_str(shape), ", ", dtype == DType::f64 ? "float64" : "float32", ", eps ", eps);
        const Tensor x = edgy_values(shape, dtype);
        const Run fused = run(x, eps, elu_plus_one_normalised), composed = run(x, eps, elu_plus_one_composed);
        CHECK(same_bits(fused.out, composed.out));
        CHECK(same_bits(fused.grad, composed.grad));
        // Without the map: positive features, as DPFP's and ELU+1's are.
        const Tensor phi = exp(x * 0.25) + 0.01;
        const Run plain = run(phi, eps, sum_normalise), plain_composed = run(phi, eps, sum_normalise_composed);
        CHECK(same_bits(plain.out, plain_composed.out));
        CHECK(same_bits(plain.grad, plain_composed.grad));
      }
    }
  }
}

TEST_CASE("sum_normalise: views read in place give the bits of their contiguous copies") {
  // ELU+1 reads x through its strides when its last axis has unit stride: leading
  // axes exchanged (two leading axes that do not merge), and windows of a wider
  // projection (as the fast layers' q and k are), beside a copy made first.
  struct View {
    const char* name;
    Shape shape;
    std::function<Tensor(const Tensor&)> of;
  };
  const View views[] = {
      {"leading axes exchanged", {6, 5, 8}, [](const Tensor& t) { return transpose(t, 0, 1); }},
      {"a window of the last axis", {7, 3, 2, 40}, [](const Tensor& t) { return narrow(t, -1, 9, 16); }},
      {"a window of a window", {4, 9, 3, 40}, [](const Tensor& t) { return narrow(narrow(t, 1, 2, 5), -1, 0, 8); }},
      {"last axis transposed (copied)", {5, 6, 7}, [](const Tensor& t) { return transpose(t, -1, -2); }},
  };
  for (const View& v : views) {
    INFO("view: ", std::string(v.name));
    const Tensor x = edgy_values(v.shape, DType::f32);
    auto in_place = [&](const Tensor& t, double eps) { return elu_plus_one_normalised(v.of(t), eps); };
    auto copied = [&](const Tensor& t, double eps) { return elu_plus_one_normalised(contiguous(v.of(t)), eps); };
    const Run a = run(x, 1e-6, in_place), b = run(x, 1e-6, copied);
    CHECK(same_bits(a.out, b.out));
    CHECK(same_bits(a.grad, b.grad));
    const Run c = run(x, 1e-6, [&](const Tensor& t, double eps) { return elu_plus_one_composed(v.of(t), eps); });
    CHECK(same_bits(a.out, c.out));
  }
}

TEST_CASE("sum_normalise: the backward keeps the features and the denominators, never the output") {
  const Tensor x = random_f64({4, 3, 5}, 2).requires_grad_();
  const Tensor y = elu_plus_one_normalised(x, 1e-6);
  const auto& node = y.grad_fn();
  REQUIRE(node);
  REQUIRE(node->saved.size() == 2);
  CHECK(node->saved[0].shape() == (Shape{4, 3, 5}));
  CHECK(node->saved[1].shape() == (Shape{4, 3, 1}));
  CHECK(node->inputs.empty());
  CHECK(!node->output.defined());
  // The kept features are ELU(x) + 1, not x.
  CHECK(node->saved[0].to_vector<double>() == (elu(x.detach()) + 1.0).to_vector<double>());
  // Without a map the features kept are x itself (no copy).
  const Tensor p = (random_f64({3, 4}, 5, 0.1, 1.0)).requires_grad_();
  const Tensor q = sum_normalise(p, 1e-6);
  CHECK(q.grad_fn()->saved[0].data<double>() == p.data<double>());
  // Without grad nothing is recorded.
  CHECK(!elu_plus_one_normalised(x.detach(), 1e-6).grad_fn());
  CHECK(!sum_normalise(p.detach(), 1e-6).grad_fn());
}

TEST_CASE("sum_normalise: errors name the op, the shape and eps") {
  const Tensor x = Tensor::zeros({2, 3});
  check_mentions(error_of([&] { sum_normalise(x, -1e-3); }), {"sum_normalise", "eps", ">= 0", "-0.001"});
  check_mentions(error_of([&] { elu_plus_one_normalised(x, std::numeric_limits<double>::quiet_NaN()); }),
                 {"elu_plus_one_normalised", "eps", "finite"});
  check_mentions(error_of([&] { sum_normalise(Tensor::zeros({3, 0}), 1e-6); }), {"sum_normalise", "[3, 0]", "n = 0"});
  check_mentions(error_of([&] { sum_normalise(Tensor::scalar(1.0, DType::f32, Device::cpu), 1e-6); }),
                 {"sum_normalise", "at least 1 dim", "float32[]"});
  check_mentions(error_of([&] { elu_plus_one_normalised(x.to(DType::i64), 1e-6); }),
                 {"elu_plus_one_normalised", "floating-point", "int64"});
  check_mentions(error_of([&] { sum_normalise(Tensor(), 1e-6); }), {"sum_normalise", "undefined"});
}

}  // namespace loom::test
