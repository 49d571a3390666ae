// cases_dpfp.cpp: op-table cases for the fused DPFP feature map against a naive
// loop over its definition, the fused op against the same map composed of
// concat / narrow / relu / mul (as the models built it before the op existed),
// what its backward keeps, and its error messages.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
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

// x [..., n] -> [..., 2n·nu]: r = (max(x, 0), max(-x, 0)) and, for block i = 1..nu,
// out[(i-1)·2n + j] = r[j] · r[(j - i) mod 2n].
Ref dpfp_ref(const Ref& x, int64_t nu) {
  const int64_t n = x.shape.back(), m = 2 * n, rows = x.numel() / n;
  Shape shape = x.shape;
  shape.back() = m * nu;
  Ref out(shape);
  for (int64_t row = 0; row < rows; ++row) {
    std::vector<double> r(m);
    for (int64_t c = 0; c < n; ++c) {
      r[c] = std::max(x.v[row * n + c], 0.0);
      r[n + c] = std::max(-x.v[row * n + c], 0.0);
    }
    for (int64_t i = 1; i <= nu; ++i)
      for (int64_t j = 0; j < m; ++j) out.v[row * m * nu + (i - 1) * m + j] = r[j] * r[((j - i) % m + m) % m];
  }
  return out;
}

// |x| >= 0.1 keeps the central differences of the gradient check off relu's kink.
void add_dpfp(std::vector<OpCase>& c, const std::string& name, InputSpec x, int64_t nu) {
  c.push_back({name, {std::move(x.range(-2, 2).nonzero())},
               [nu](const Xs& t) { return dpfp(t[0], nu); },
               [nu](const Rs& r) { return dpfp_ref(r[0], nu); }});
}

}  // namespace

static CaseRegistrar dpfp_cases([](std::vector<OpCase>& c) {
  add_dpfp(c, "dpfp nu=1 [3, 4]", InputSpec({3, 4}), 1);
  add_dpfp(c, "dpfp nu=3 [2, 3, 5]", InputSpec({2, 3, 5}), 3);
  add_dpfp(c, "dpfp nu=2n-1=7 [2, 4]", InputSpec({2, 4}), 7);
  add_dpfp(c, "dpfp rank 1 [6], nu=2", InputSpec({6}), 2);
  add_dpfp(c, "dpfp rank 4 [2, 2, 3, 4], nu=3", InputSpec({2, 2, 3, 4}), 3);
  add_dpfp(c, "dpfp n=1 (only nu=1) [5, 1]", InputSpec({5, 1}), 1);
  add_dpfp(c, "dpfp transposed x [3, 4, 5], nu=2", InputSpec({3, 4, 5}).transposed(), 2);
  add_dpfp(c, "dpfp strided x [4, 6], nu=4", InputSpec({4, 6}).strided(), 4);
});

// ---- the fused op against the composition of engine ops -------------------------------

namespace {

// DPFP as the models composed it before the fused op: relu of [x, -x], then r times
// torch.roll(r, i) (rolled[j] = r[(j - i) mod 2n], the last i entries moved to the
// front) for each block, the blocks concatenated.
Tensor dpfp_composed(const Tensor& x, int64_t nu) {
  const Tensor r = relu(concat({x, neg(x)}, -1));
  const int64_t m = r.size(-1);
  std::vector<Tensor> blocks;
  for (int64_t i = 1; i <= nu; ++i)
    blocks.push_back(r * concat({narrow(r, -1, m - i, i), narrow(r, -1, 0, m - i)}, -1));
  return blocks.size() == 1 ? blocks[0] : concat(blocks, -1);
}

// Output and gradient of x (of sum(f(x) · W), W fixed) with x in `dtype`.
Evaluated run(const Tensor& x64, DType dtype, int64_t nu, bool transposed,
              const std::function<Tensor(const Tensor&, int64_t)>& f) {
  return evaluate(
      [&](const Xs& x) {
        const Tensor in = transposed ? transpose(x[0], 0, 1) : x[0];
        return cast(f(in, nu), DType::f64);
      },
      {x64.to(dtype)});
}

struct Setup {
  const char* name;
  Shape shape;
  int64_t nu;
  bool transposed = false;  // the op sees x's first two axes exchanged (a strided view)
};

// Rank 1 to 4, nu from 1 to 2n - 1, and sizes with enough rows to be spread over threads.
const Setup kSetups[] = {
    {"rank 1, nu=1", {6}, 1},
    {"rank 1, nu=2n-1", {6}, 11},
    {"rank 2, nu=2", {3, 5}, 2},
    {"n=1", {7, 1}, 1},
    {"rank 4, nu=3", {2, 3, 4, 8}, 3},
    {"rank 4, nu=2n-1", {2, 3, 4, 8}, 15},
    {"model-sized heads, many rows", {64, 2, 4, 32}, 3},
    {"retrieval-sized, nu=2n-1", {300, 7}, 13},
    {"transposed view", {5, 6, 4}, 2, true},
};

}  // namespace

TEST_CASE("dpfp: the fused op gives the composition's output bit for bit and its gradient (float64, float32)") {
  for (const Setup& s : kSetups) {
    for (DType dtype : {DType::f64, DType::f32}) {
      INFO("setup: ", std::string(s.name), ", ", dtype == DType::f64 ? "float64" : "float32");
      const Tensor x = random_f64(s.shape, 5, -2.0, 2.0);
      const Evaluated fused = run(x, dtype, s.nu, s.transposed, dpfp);
      const Evaluated composed = run(x, dtype, s.nu, s.transposed, dpfp_composed);
      // The same product r[j] · r[(j - i) mod 2n] per element: equal bits.
      CHECK(fused.out == composed.out);
      // The gradient sums the same terms in another order.
      const double d = relative_difference(fused.grads[0], composed.grads[0]);
      CHECK_MESSAGE(d <= (dtype == DType::f64 ? 1e-14 : 1e-6), "gradient: relative difference ", d);
    }
  }
}

TEST_CASE("dpfp: at x = 0 (relu's kink) the gradient is the composition's, 0") {
  // Values on a grid of 0.5 in [-2, 2]: about one in nine entries is exactly 0.
  const Tensor base = random_f64({40, 9}, 8, -2.25, 2.25);
  std::vector<double> v = base.to_vector<double>();
  for (double& e : v) e = std::round(e * 2.0) / 2.0;
  REQUIRE(std::count(v.begin(), v.end(), 0.0) > 5);
  const Tensor x = Tensor::from_vector(v, {40, 9});
  for (DType dtype : {DType::f64, DType::f32}) {
    const Evaluated fused = run(x, dtype, 4, false, dpfp);
    const Evaluated composed = run(x, dtype, 4, false, dpfp_composed);
    CHECK(fused.out == composed.out);
    CHECK(relative_difference(fused.grads[0], composed.grads[0]) <= (dtype == DType::f64 ? 1e-14 : 1e-6));
    for (size_t k = 0; k < v.size(); ++k)
      if (v[k] == 0.0) CHECK(fused.grads[0][k] == 0.0);
  }
}

TEST_CASE("dpfp: the backward keeps x only, never the output") {
  const Tensor x = random_f64({4, 3, 5}, 2).requires_grad_();
  const Tensor y = dpfp(x, 3);
  const auto& node = y.grad_fn();
  REQUIRE(node);
  REQUIRE(node->saved.size() == 1);
  CHECK(node->saved[0].shape() == (Shape{4, 3, 5}));
  CHECK(node->inputs.empty());
  CHECK(!node->output.defined());
  sum(y).backward();
  CHECK(x.grad().defined());
  // Without grad nothing is recorded.
  CHECK(!dpfp(x.detach(), 3).grad_fn());
}

TEST_CASE("dpfp: errors name the op, the shape and nu") {
  const Tensor x = Tensor::zeros({2, 3, 4});
  check_mentions(error_of([&] { dpfp(x, 0); }), {"dpfp", "nu = 0", "[1, 7]", "[2, 3, 4]", "n = 4"});
  check_mentions(error_of([&] { dpfp(x, 8); }), {"dpfp", "nu = 8", "[1, 7]", "[2, 3, 4]"});
  check_mentions(error_of([&] { dpfp(Tensor::zeros({3}), -1); }), {"dpfp", "nu = -1", "[1, 5]", "[3]"});
  check_mentions(error_of([&] { dpfp(Tensor::zeros({5, 1}), 2); }), {"dpfp", "nu = 2", "[1, 1]", "[5, 1]"});
  check_mentions(error_of([&] { dpfp(Tensor::zeros({3, 0}), 1); }), {"dpfp", "[3, 0]", "n = 0"});
  check_mentions(error_of([&] { dpfp(Tensor::scalar(1.0, DType::f32, Device::cpu), 1); }),
                 {"dpfp", "at least 1 dim", "float32[]"});
  check_mentions(error_of([&] { dpfp(x.to(DType::i64), 1); }), {"dpfp", "floating-point", "int64"});
  check_mentions(error_of([&] { dpfp(Tensor(), 1); }), {"dpfp", "undefined"});
}

}  // namespace loom::test
