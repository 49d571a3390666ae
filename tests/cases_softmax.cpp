// cases_softmax.cpp: op-table cases for softmax, log_softmax and cross_entropy,
// and tests of the fused kernels against the same math composed of elementary ops.
#include <algorithm>
#include <cmath>
#include <random>

#include "engine/ops.h"
#include "tests/fused_check.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

using Xs = std::vector<Tensor>;
using Rs = std::vector<Ref>;

// ---- references: plain double loops ---------------------------------------------

// Softmax of x along `axis`: x seen as [outer, n, inner], each (outer, inner)
// line normalised on its own.
Ref softmax_ref(const Ref& x, int64_t axis, bool log) {
  if (axis < 0) axis += x.dim();
  const int64_t n = x.shape[axis];
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
  for (int64_t d = axis + 1; d < x.dim(); ++d) inner *= x.shape[d];
  Ref out(x.shape);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t j) { return (o * n + j) * inner + i; };
      double m = -INFINITY;
      for (int64_t j = 0; j < n; ++j) m = std::max(m, x.v[at(j)]);
      double s = 0.0;
      for (int64_t j = 0; j < n; ++j) s += std::exp(x.v[at(j)] - m);
      for (int64_t j = 0; j < n; ++j)
        out.v[at(j)] = log ? x.v[at(j)] - m - std::log(s) : std::exp(x.v[at(j)] - m) / s;
    }
  }
  return out;
}

// Mean over rows of logsumexp(logits[i]) - logits[i, targets[i]].
Ref cross_entropy_ref(const Ref& logits, const Ref& targets) {
  const int64_t N = logits.shape[0], C = logits.shape[1];
  double total = 0.0;
  for (int64_t i = 0; i < N; ++i) {
    double m = -INFINITY;
    for (int64_t j = 0; j < C; ++j) m = std::max(m, logits.at({i, j}));
    double s = 0.0;
    for (int64_t j = 0; j < C; ++j) s += std::exp(logits.at({i, j}) - m);
    total += m + std::log(s) - logits.at({i, static_cast<int64_t>(targets.v[i])});
  }
  Ref out(Shape{});
  out.v[0] = total / N;
  return out;
}

void add_softmax(std::vector<OpCase>& cases, OpId op, const std::string& variant, InputSpec spec, int64_t axis) {
  const bool log = op == OpId::log_softmax;
  const std::string name = std::string(op_name(op)) + " " + variant;
  cases.push_back({name, {std::move(spec)},
                   [log, axis](const Xs& x) { return log ? log_softmax(x[0], axis) : softmax(x[0], axis); },
                   [log, axis](const Rs& r) { return softmax_ref(r[0], axis, log); }});
}

}  // namespace

static CaseRegistrar softmax_cases([](std::vector<OpCase>& c) {
  for (OpId op : {OpId::softmax, OpId::log_softmax}) {
    add_softmax(c, op, "last axis [3,5]", InputSpec({3, 5}).range(-3, 3), -1);
    add_softmax(c, op, "1-D [7]", InputSpec({7}).range(-3, 3), 0);
    add_softmax(c, op, "middle axis [2,4,3] axis 1", InputSpec({2, 4, 3}).range(-3, 3), 1);
    add_softmax(c, op, "first axis [4,3] axis 0", InputSpec({4, 3}).range(-3, 3), 0);
    add_softmax(c, op, "first axis [3,2,4] axis -3", InputSpec({3, 2, 4}).range(-3, 3), -3);
    add_softmax(c, op, "transposed [4,5]", InputSpec({4, 5}).range(-3, 3).transposed(), -1);
    add_softmax(c, op, "transposed [4,5] axis 0", InputSpec({4, 5}).range(-3, 3).transposed(), 0);
    add_softmax(c, op, "strided [2,3,4]", InputSpec({2, 3, 4}).range(-3, 3).strided(), -1);
    add_softmax(c, op, "strided [3,4] axis 0", InputSpec({3, 4}).range(-3, 3).strided(), 0);
    add_softmax(c, op, "rows of size 1 [4,1]", InputSpec({4, 1}).range(-3, 3), -1);
    // exp(200) overflows float32: only the max shift keeps this finite.
    add_softmax(c, op, "large logits [3,6]", InputSpec({3, 6}).range(200, 210), -1);
    add_softmax(c, op, "empty [0,5]", InputSpec({0, 5}), -1);
  }
});

static CaseRegistrar cross_entropy_cases([](std::vector<OpCase>& c) {
  auto add = [&](const std::string& variant, InputSpec logits, InputSpec targets) {
    c.push_back({"cross_entropy " + variant, {std::move(logits), std::move(targets)},
                 [](const Xs& x) { return cross_entropy(x[0], x[1]); },
                 [](const Rs& r) { return cross_entropy_ref(r[0], r[1]); }});
  };
  add("[5,7]", InputSpec({5, 7}).range(-3, 3), InputSpec({5}).indices(7));
  add("transposed logits [6,4]", InputSpec({6, 4}).range(-3, 3).transposed(), InputSpec({6}).indices(4));
  add("strided logits, strided targets [4,5]", InputSpec({4, 5}).range(-3, 3).strided(),
      InputSpec({4}).indices(5).strided());
  add("one row [1,3]", InputSpec({1, 3}).range(-3, 3), InputSpec({1}).indices(3));
  add("one class [3,1]", InputSpec({3, 1}).range(-3, 3), InputSpec({3}).indices(1));
  add("large logits [4,6]", InputSpec({4, 6}).range(200, 210), InputSpec({4}).indices(6));
});

// ---- fused kernels against the same math composed of elementary ops ----------------

namespace {

// The max shift is a constant as far as the math goes: detach it.
Tensor shifted(const Tensor& x, int64_t axis) { return x - max(x, {axis}, true).detach(); }

Tensor composed_softmax(const Tensor& x, int64_t axis) {
  const Tensor e = exp(shifted(x, axis));
  return e / sum(e, {axis}, true);
}

Tensor composed_log_softmax(const Tensor& x, int64_t axis) {
  const Tensor s = shifted(x, axis);
  return s - log(sum(exp(s), {axis}, true));
}

// A float64 [N, C] tensor with ones at (i, targets[i]).
Tensor one_hot(const std::vector<int64_t>& targets, int64_t C) {
  std::vector<double> v(targets.size() * C, 0.0);
  for (size_t i = 0; i < targets.size(); ++i) v[i * C + targets[i]] = 1.0;
  return Tensor::from_vector(v, {static_cast<int64_t>(targets.size()), C});
}

}  // namespace

TEST_CASE("softmax, log_softmax: fused kernels match the composed ops in float64") {
  // The large shape spreads rows over threads.
  for (const Shape& shape : {Shape{3, 7, 5}, Shape{300, 200}}) {
    for (int64_t axis = 0; axis < static_cast<int64_t>(shape.size()); ++axis) {
      INFO("shape ", shape_str(shape), ", axis ", axis);
      const Xs x = {random_f64(shape, 7)};
      check_same(evaluate([&](const Xs& v) { return softmax(v[0], axis); }, x),
                 evaluate([&](const Xs& v) { return composed_softmax(v[0], axis); }, x), 1e-10);
      check_same(evaluate([&](const Xs& v) { return log_softmax(v[0], axis); }, x),
                 evaluate([&](const Xs& v) { return composed_log_softmax(v[0], axis); }, x), 1e-10);
    }
  }
}

TEST_CASE("cross_entropy: fused kernel matches the composed ops in float64") {
  for (const Shape& shape : {Shape{6, 5}, Shape{400, 120}}) {
    INFO("logits ", shape_str(shape));
    const int64_t N = shape[0], C = shape[1];
    std::mt19937_64 rng(3);
    std::vector<int64_t> t(N);
    for (auto& v : t) v = static_cast<int64_t>(rng() % C);
    const Tensor targets = Tensor::from_vector(t, {N});
    const Tensor onehot = one_hot(t, C);
    const Xs logits = {random_f64(shape, 11)};
    check_same(evaluate([&](const Xs& v) { return cross_entropy(v[0], targets); }, logits),
               evaluate([&](const Xs& v) { return mean(-sum(composed_log_softmax(v[0], 1) * onehot, {1})); },
                        logits),
               1e-10);
  }
}

TEST_CASE("softmax family: float32 forward and backward agree with float64") {
  // The walker gradient-checks only float64; this covers the float32 kernels' backward.
  const Tensor x64 = random_f64({37, 300}, 5);
  const Tensor x32 = x64.to(DType::f32);
  std::vector<int64_t> t(37);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int64_t>((i * 7) % 300);
  const Tensor targets = Tensor::from_vector(t, {37});
  const std::vector<std::function<Tensor(const Tensor&)>> fns = {
      [](const Tensor& x) { return softmax(x, -1); }, [](const Tensor& x) { return log_softmax(x, -1); },
      [](const Tensor& x) { return softmax(x, 0); }, [&](const Tensor& x) { return cross_entropy(x, targets); }};
  for (size_t k = 0; k < fns.size(); ++k) {
    INFO("function ", k);
    const Evaluated e64 = evaluate([&](const Xs& v) { return fns[k](v[0]); }, {x64});
    const Evaluated e32 = evaluate([&](const Xs& v) { return cast(fns[k](v[0]), DType::f64); }, {x32});
    check_same(e32, e64, 1e-5);
  }
}

TEST_CASE("softmax, log_softmax, cross_entropy: errors name the op and the offending value") {
  const Tensor x = Tensor::zeros({2, 3});
  std::string msg = error_of([&] { softmax(x, 2); });
  CHECK(contains(msg, "softmax"));
  CHECK(contains(msg, "axis 2"));
  CHECK(contains(msg, "[2, 3]"));
  msg = error_of([&] { log_softmax(x, -3); });
  CHECK(contains(msg, "log_softmax"));
  CHECK(contains(msg, "axis -3"));
  msg = error_of([&] { softmax(Tensor::zeros({2, 3}, DType::i64)); });
  CHECK(contains(msg, "softmax"));
  CHECK(contains(msg, "int64"));

  const Tensor logits = Tensor::zeros({4, 5});
  msg = error_of([&] { cross_entropy(logits, Tensor::zeros({4}, DType::f32)); });
  CHECK(contains(msg, "cross_entropy"));
  CHECK(contains(msg, "int64"));
  CHECK(contains(msg, "float32[4]"));
  msg = error_of([&] { cross_entropy(logits, Tensor::from_vector<int64_t>({0, 1, 7, 2}, {4})); });
  CHECK(contains(msg, "cross_entropy"));
  CHECK(contains(msg, "target 7 at position 2"));
  CHECK(contains(msg, "[0, 5)"));
  CHECK(contains(msg, "[4, 5]"));
  msg = error_of([&] { cross_entropy(logits, Tensor::from_vector<int64_t>({0, -1, 0, 0}, {4})); });
  CHECK(contains(msg, "target -1 at position 1"));
  msg = error_of([&] { cross_entropy(logits, Tensor::zeros({3}, DType::i64)); });
  CHECK(contains(msg, "cross_entropy"));
  CHECK(contains(msg, "[3]"));
  CHECK(contains(msg, "[4, 5]"));
  msg = error_of([&] { cross_entropy(Tensor::zeros({2, 4, 5}), Tensor::zeros({2}, DType::i64)); });
  CHECK(contains(msg, "cross_entropy"));
  CHECK(contains(msg, "2-D"));
  CHECK(contains(msg, "[2, 4, 5]"));
}

}  // namespace loom::test
