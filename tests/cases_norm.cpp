// cases_norm.cpp: op-table cases for layer_norm, and tests of the fused kernels
// against the same math composed of elementary ops.
#include <cmath>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "engine/ops.h"
#include "tests/fused_check.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

// Layer norm over the last axis in plain loops; w and b may be null (no affine).
Ref layer_norm_ref(const Ref& x, const Ref* w, const Ref* b, double eps) {
  const int64_t D = x.shape.back(), rows = x.numel() / D;
  Ref out(x.shape);
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x.v.data() + r * D;
    double mean = 0.0;
    for (int64_t i = 0; i < D; ++i) mean += xr[i];
    mean /= D;
    double var = 0.0;
    for (int64_t i = 0; i < D; ++i) var += (xr[i] - mean) * (xr[i] - mean);
    var /= D;
    for (int64_t i = 0; i < D; ++i) {
      double y = (xr[i] - mean) / std::sqrt(var + eps);
      if (w) y *= w->v[i];
      if (b) y += b->v[i];
      out.v[r * D + i] = y;
    }
  }
  return out;
}

enum class Affine { none, weight, bias, both };

// A case with x from `x_spec`; weight (around 1) and bias as `affine` says.
void add_layer_norm(std::vector<OpCase>& cases, const std::string& variant, InputSpec x_spec, Affine affine,
                    double eps = 1e-5) {
  const int64_t D = x_spec.shape.back();
  const bool has_w = affine == Affine::weight || affine == Affine::both;
  const bool has_b = affine == Affine::bias || affine == Affine::both;
  std::vector<InputSpec> inputs{std::move(x_spec)};
  if (has_w) inputs.push_back(InputSpec({D}).range(0.5, 1.5));
  if (has_b) inputs.push_back(InputSpec({D}));
  cases.push_back({"layer_norm " + variant, inputs,
                   [=](const Xs& x) {
                     return layer_norm(x[0], has_w ? x[1] : Tensor(), has_b ? x[has_w ? 2 : 1] : Tensor(), eps);
                   },
                   [=](const Rs& r) {
                     return layer_norm_ref(r[0], has_w ? &r[1] : nullptr, has_b ? &r[has_w ? 2 : 1] : nullptr, eps);
                   }});
}

}  // namespace

static CaseRegistrar layer_norm_cases([](std::vector<OpCase>& c) {
  add_layer_norm(c, "affine [3,6]", InputSpec({3, 6}), Affine::both);
  add_layer_norm(c, "no affine [4,5]", InputSpec({4, 5}), Affine::none);
  add_layer_norm(c, "weight only [3,4]", InputSpec({3, 4}), Affine::weight);
  add_layer_norm(c, "bias only [3,4]", InputSpec({3, 4}), Affine::bias);
  add_layer_norm(c, "3-D [2,3,4] affine", InputSpec({2, 3, 4}), Affine::both);
  add_layer_norm(c, "1-D [8] affine", InputSpec({8}), Affine::both);
  add_layer_norm(c, "strided x [3,5] affine", InputSpec({3, 5}).strided(), Affine::both);
  add_layer_norm(c, "transposed x [4,6] affine", InputSpec({4, 6}).transposed(), Affine::both);
  add_layer_norm(c, "strided x [3,5] no affine", InputSpec({3, 5}).strided(), Affine::none);
  add_layer_norm(c, "D=1 [4,1] affine", InputSpec({4, 1}), Affine::both);
  add_layer_norm(c, "D=1 [4,1] no affine", InputSpec({4, 1}), Affine::none);
  add_layer_norm(c, "eps=0.5 [3,4]", InputSpec({3, 4}), Affine::both, 0.5);
  // A mean far from zero against a small spread: float32 must not lose the spread
  // (rounding the mean to float32 alone would cost up to 1e-4 here).
  add_layer_norm(c, "large mean [3,16]", InputSpec({3, 16}).range(1000, 1001), Affine::both);
  add_layer_norm(c, "empty [0,4]", InputSpec({0, 4}), Affine::both);
});

// ---- the fused kernel against the same math composed of elementary ops ---------------

namespace {

Tensor composed_layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  const Tensor centred = x - mean(x, {-1}, true);
  const Tensor var = mean(centred * centred, {-1}, true);
  Tensor y = centred * rsqrt(var + eps);
  if (weight.defined()) y = y * weight;
  if (bias.defined()) y = y + bias;
  return y;
}

}  // namespace

TEST_CASE("layer_norm: fused kernels match the composed ops in float64") {
  // [257, 130] is large enough to split rows over threads and the weight/bias
  // gradient sums over blocks (of unequal size).
  for (const Shape& shape : {Shape{2, 3, 8}, Shape{257, 130}}) {
    INFO("x ", shape_str(shape));
    const int64_t D = shape.back();
    const Tensor x = random_f64(shape, 21, -2.0, 4.0);
    const Tensor w = random_f64({D}, 22, 0.5, 1.5), b = random_f64({D}, 23);
    check_same(evaluate([](const Xs& v) { return layer_norm(v[0], v[1], v[2]); }, {x, w, b}),
               evaluate([](const Xs& v) { return composed_layer_norm(v[0], v[1], v[2], 1e-5); }, {x, w, b}), 1e-10);
    check_same(evaluate([](const Xs& v) { return layer_norm(v[0], Tensor(), Tensor()); }, {x}),
               evaluate([](const Xs& v) { return composed_layer_norm(v[0], Tensor(), Tensor(), 1e-5); }, {x}),
               1e-10);
    // A transposed input goes through the copy to contiguous rows.
    const Tensor xt = random_f64({D, shape_numel(shape) / D}, 24);
    check_same(evaluate([](const Xs& v) { return layer_norm(transpose(v[0], 0, 1), v[1], v[2], 1e-3); }, {xt, w, b}),
               evaluate([](const Xs& v) { return composed_layer_norm(transpose(v[0], 0, 1), v[1], v[2], 1e-3); },
                        {xt, w, b}),
               1e-10);
  }
}

TEST_CASE("layer_norm: float32 forward and backward agree with float64") {
  // The walker gradient-checks only float64; this covers the float32 backward kernel.
  const Tensor x = random_f64({300, 128}, 31), w = random_f64({128}, 32, 0.5, 1.5), b = random_f64({128}, 33);
  const auto f32 = [](const Xs& v) {
    return cast(layer_norm(cast(v[0], DType::f32), cast(v[1], DType::f32), cast(v[2], DType::f32)), DType::f64);
  };
  check_same(evaluate(f32, {x, w, b}), evaluate([](const Xs& v) { return layer_norm(v[0], v[1], v[2]); }, {x, w, b}),
             1e-5);
}

TEST_CASE("layer_norm: only the gradients that are needed are computed") {
  // The weight's gradient is the same whether or not x and bias require grad
  // (the kernel then skips grad_x and grad_bias).
  const Tensor x = random_f64({4, 6}, 41), w = random_f64({6}, 42), b = random_f64({6}, 43);
  const Tensor W = random_f64({4, 6}, 44);
  auto weight_grad = [&](bool all) {
    Tensor xl = clone(x), wl = clone(w), bl = clone(b);
    wl.requires_grad_();
    if (all) {
      xl.requires_grad_();
      bl.requires_grad_();
    }
    sum(layer_norm(xl, wl, bl) * W).backward();
    CHECK(xl.grad().defined() == all);
    return wl.grad().to_vector<double>();
  };
  CHECK(relative_difference(weight_grad(false), weight_grad(true)) <= 1e-12);
}

#ifdef _OPENMP
TEST_CASE("layer_norm: gradients do not depend on the number of threads") {
  // The weight and bias sums are cut into blocks by size, not by thread.
  const Tensor x = random_f64({600, 100}, 51), w = random_f64({100}, 52), b = random_f64({100}, 53);
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    const Evaluated e = evaluate([](const Xs& v) { return layer_norm(v[0], v[1], v[2]); }, {x, w, b});
    omp_set_num_threads(saved);
    return e;
  };
  const Evaluated one = run(1), four = run(4);
  CHECK(one.out == four.out);
  CHECK(one.grads == four.grads);
}
#endif

TEST_CASE("layer_norm: errors name the op and the offending shapes") {
  const Tensor x = Tensor::zeros({2, 4});
  std::string msg = error_of([&] { layer_norm(x, Tensor::ones({5}), Tensor()); });
  CHECK(contains(msg, "layer_norm"));
  CHECK(contains(msg, "weight"));
  CHECK(contains(msg, "[5]"));
  CHECK(contains(msg, "[2, 4]"));
  msg = error_of([&] { layer_norm(x, Tensor(), Tensor::zeros({2, 4})); });
  CHECK(contains(msg, "layer_norm"));
  CHECK(contains(msg, "bias"));
  CHECK(contains(msg, "[2, 4]"));
  msg = error_of([&] { layer_norm(x, Tensor::ones({4}, DType::f64), Tensor()); });
  CHECK(contains(msg, "layer_norm"));
  CHECK(contains(msg, "float64[4]"));
  msg = error_of([&] { layer_norm(Tensor::scalar(1.0), Tensor(), Tensor()); });
  CHECK(contains(msg, "layer_norm"));
  CHECK(contains(msg, "[]"));
  msg = error_of([&] { layer_norm(Tensor::zeros({2, 4}, DType::i64), Tensor(), Tensor()); });
  CHECK(contains(msg, "layer_norm"));
  CHECK(contains(msg, "int64"));
}

}  // namespace loom::test
