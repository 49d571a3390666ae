// test_random_shapes.cpp: forward checks on randomly drawn shapes.
//
// The op table (cases_*.cpp) picks its shapes by hand; this sweep draws them:
// random ranks and sizes (1 to 5 elements per axis, size-1 axes included),
// random broadcasting between operands, random transposed or narrowed views,
// random reduction axes and matmul batch shapes. Each result is compared with
// the same naive references the table uses (Ref, map, zip), in float64.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "engine/ops.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

struct Draw {
  std::mt19937_64 rng;
  explicit Draw(uint64_t seed) : rng(seed) {}
  int64_t integer(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); }
  bool coin() { return integer(0, 1) == 1; }
  Shape shape(int64_t max_rank) {
    Shape s(integer(1, max_rank));
    for (auto& d : s) d = integer(1, 5);
    return s;
  }
  // A tensor of `shape` with values in [-1, 1), seen through a random layout:
  // contiguous, a transposed view of a contiguous base, or a narrowed window.
  Tensor tensor(const Shape& shape) {
    std::uniform_real_distribution<double> u(-1, 1);
    const int64_t layout = integer(0, 2);
    Shape base = shape;
    if (layout == 1 && base.size() >= 2) std::swap(base[base.size() - 1], base[base.size() - 2]);
    if (layout == 2) base.back() += 2;
    std::vector<double> v(shape_numel(base));
    for (auto& x : v) x = u(rng);
    Tensor t = Tensor::from_vector(v, base);
    if (layout == 1 && base.size() >= 2) return transpose(t, -1, -2);
    if (layout == 2) return narrow(t, -1, 1, shape.back());
    return t;
  }
};

// Largest |a - b| over elements; infinity when the shapes differ.
double max_difference(const Ref& a, const Ref& b) {
  if (a.shape != b.shape) return INFINITY;
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.v[i] - b.v[i]));
  return m;
}

}  // namespace

TEST_CASE("random shapes: binary ops broadcast like numpy") {
  Draw draw(20261123);
  for (int trial = 0; trial < 200; ++trial) {
    Shape out = draw.shape(4);
    // Each operand drops some leading axes and sets some others to 1.
    auto operand = [&]() {
      Shape s(out.begin() + draw.integer(0, static_cast<int64_t>(out.size()) - 1), out.end());
      for (auto& d : s)
        if (draw.integer(0, 3) == 0) d = 1;
      return s;
    };
    const Tensor a = draw.tensor(operand()), b = draw.tensor(operand());
    INFO("trial ", trial, ": ", a.describe(), " and ", b.describe());
    CHECK(max_difference(Ref::from(add(a, b)), zip(Ref::from(a), Ref::from(b), [](double x, double y) { return x + y; })) <= 1e-15);
    CHECK(max_difference(Ref::from(mul(a, b)), zip(Ref::from(a), Ref::from(b), [](double x, double y) { return x * y; })) <= 1e-15);
    CHECK(max_difference(Ref::from(maximum(a, b)),
                         zip(Ref::from(a), Ref::from(b), [](double x, double y) { return std::max(x, y); })) == 0.0);
    CHECK(max_difference(Ref::from(tanh(a)), map(Ref::from(a), [](double x) { return std::tanh(x); })) <= 1e-15);
  }
}

TEST_CASE("random shapes: reductions over random axes") {
  Draw draw(7);
  for (int trial = 0; trial < 200; ++trial) {
    const Tensor x = draw.tensor(draw.shape(4));
    std::vector<int64_t> axes;
    for (int64_t d = 0; d < x.dim(); ++d)
      if (draw.coin()) axes.push_back(draw.coin() ? d : d - x.dim());  // negative axes too
    const bool keepdim = draw.coin();
    INFO("trial ", trial, ": ", x.describe(), " axes ", shape_str(axes), " keepdim ", keepdim);
    // Reference: fold every element into its output cell.
    const Ref r = Ref::from(x);
    std::vector<bool> reduced(x.dim(), axes.empty());
    for (auto a : axes) reduced[a < 0 ? a + x.dim() : a] = true;
    Shape kept;
    for (int64_t d = 0; d < x.dim(); ++d) kept.push_back(reduced[d] ? 1 : x.shape()[d]);
    Ref s(kept, 0.0), m(kept, -INFINITY);
    for (int64_t i = 0; i < r.numel(); ++i) {
      auto idx = r.unflat(i);
      for (int64_t d = 0; d < x.dim(); ++d)
        if (reduced[d]) idx[d] = 0;
      s.at(idx) += r.v[i];
      m.at(idx) = std::max(m.at(idx), r.v[i]);
    }
    if (!keepdim) {
      Shape dropped;
      for (int64_t d = 0; d < x.dim(); ++d)
        if (!reduced[d]) dropped.push_back(x.shape()[d]);
      s.shape = m.shape = dropped;
    }
    CHECK(max_difference(Ref::from(sum(x, axes, keepdim)), s) <= 1e-14);
    CHECK(max_difference(Ref::from(max(x, axes, keepdim)), m) == 0.0);
  }
}

TEST_CASE("random shapes: batched matmul with broadcast batch dims and transposed operands") {
  Draw draw(99);
  for (int trial = 0; trial < 100; ++trial) {
    const int64_t M = draw.integer(1, 6), K = draw.integer(1, 6), N = draw.integer(1, 6);
    Shape batch = draw.shape(2);
    if (draw.coin()) batch.clear();
    Shape a_shape = batch, b_shape = batch;
    for (auto& d : b_shape)
      if (draw.coin()) d = 1;  // broadcast in b
    if (draw.coin() && !b_shape.empty()) b_shape.erase(b_shape.begin());
    a_shape.insert(a_shape.end(), {M, K});
    b_shape.insert(b_shape.end(), {K, N});
    const Tensor a = draw.tensor(a_shape), b = draw.tensor(b_shape);
    INFO("trial ", trial, ": ", a.describe(), " · ", b.describe());
    const Ref out = Ref::from(matmul(a, b));
    const Ref ra = Ref::from(a), rb = Ref::from(b);
    Shape expected_shape = broadcast_shapes(Shape(a_shape.begin(), a_shape.end() - 2),
                                            Shape(b_shape.begin(), b_shape.end() - 2), "test");
    expected_shape.insert(expected_shape.end(), {M, N});
    REQUIRE(out.shape == expected_shape);
    double worst = 0;
    for (int64_t i = 0; i < out.numel(); ++i) {
      const auto idx = out.unflat(i);
      auto pick = [&](const Ref& r, int64_t row, int64_t col) {
        std::vector<int64_t> j;
        const size_t lead = idx.size() - r.shape.size();
        for (size_t d = lead; d + 2 < idx.size(); ++d) j.push_back(r.shape[d - lead] == 1 ? 0 : idx[d]);
        j.push_back(row);
        j.push_back(col);
        return r.at(j);
      };
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += pick(ra, idx[idx.size() - 2], k) * pick(rb, k, idx.back());
      worst = std::max(worst, std::abs(out.v[i] - s));
    }
    CHECK(worst <= 1e-14);
  }
}

}  // namespace loom::test
