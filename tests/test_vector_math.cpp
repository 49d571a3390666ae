// test_vector_math.cpp: engine/vector_math.h's exp, sigmoid and tanh of floats
// against the double library functions (an independent reference), over a sweep
// of the whole float range and at the edges.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/vector_math.h"

namespace loom {

namespace {

// The distance from `got` to the double `want` in units of the float spacing at want.
double ulps(float got, double want) {
  const float rounded = static_cast<float>(want);
  const double spacing = static_cast<double>(std::nextafter(rounded, std::numeric_limits<float>::infinity())) -
                         static_cast<double>(rounded);
  return std::abs(static_cast<double>(got) - want) / spacing;
}

// Every 97th float bit pattern of [lo, hi] (both of one sign's ordering), about
// a hundred thousand per binade walk, plus the ends.
std::vector<float> sweep(float lo, float hi) {
  std::vector<float> xs{lo, hi};
  for (float x = lo; x < hi;) {
    xs.push_back(x);
    int32_t bits;
    std::memcpy(&bits, &x, 4);
    bits += x < 0 ? -97 : 97;
    if (x < 0 && bits < static_cast<int32_t>(0x80000000u) + 97) bits = 0;  // past -0: go on from +0
    std::memcpy(&x, &bits, 4);
  }
  return xs;
}

}  // namespace

TEST_CASE("vector_math: exp_float is within 2 ulp of exp wherever e^x is a normal float") {
  constexpr float kMin = -87.33654f, kMax = 88.72283f;
  double worst = 0;
  float worst_x = 0;
  int64_t checked = 0;
  for (float x : sweep(kMin, kMax)) {
    const double e = ulps(vmath::exp_float(x), std::exp(static_cast<double>(x)));
    if (e > worst) worst = e, worst_x = x;
    ++checked;
  }
  INFO("worst at x = " << worst_x << ", " << checked << " values");
  CHECK(checked > 1000000);
  CHECK(worst <= 2.0);
  CHECK(vmath::exp_float(0.0f) == 1.0f);
  CHECK(vmath::exp_float(1.0f) == doctest::Approx(2.718281828).epsilon(2e-7));
}

TEST_CASE("vector_math: exp_float at the edges: inf above, 0 below, NaN stays NaN") {
  constexpr float inf = std::numeric_limits<float>::infinity();
  CHECK(vmath::exp_float(inf) == inf);
  CHECK(vmath::exp_float(88.73f) == inf);
  CHECK(vmath::exp_float(1000.0f) == inf);
  CHECK(std::isfinite(vmath::exp_float(88.72f)));
  CHECK(vmath::exp_float(-inf) == 0.0f);
  CHECK(vmath::exp_float(-87.34f) == 0.0f);  // e^x would be a denormal
  CHECK(vmath::exp_float(-1000.0f) == 0.0f);
  CHECK(vmath::exp_float(-87.336f) > 0.0f);
  CHECK(std::isnan(vmath::exp_float(std::numeric_limits<float>::quiet_NaN())));
  CHECK(std::isnan(vmath::exp_float(-std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("vector_math: sigmoid and tanh of floats against the double functions") {
  double sigmoid_worst = 0, tanh_worst = 0;
  for (float x : sweep(-100.0f, 100.0f)) {
    const double d = static_cast<double>(x);
    const double s = 1.0 / (1.0 + std::exp(-d));
    // Relative to the value (σ(x) is tiny for x << 0 and must stay accurate there),
    // down to the smallest normal float.
    if (s > 1e-37) sigmoid_worst = std::max(sigmoid_worst, ulps(vmath::sigmoid(x), s));
    // tanh is computed as (1 - e)/(1 + e): accurate to a few ulp of 1, absolutely.
    tanh_worst = std::max(tanh_worst, std::abs(static_cast<double>(vmath::tanh(x)) - std::tanh(d)));
  }
  CHECK(sigmoid_worst <= 4.0);
  CHECK(tanh_worst <= 3e-7);
  CHECK(vmath::sigmoid(0.0f) == 0.5f);
  CHECK(vmath::tanh(0.0f) == 0.0f);
  CHECK(vmath::tanh(-20.0f) == -1.0f);
  CHECK(std::isnan(vmath::sigmoid(std::numeric_limits<float>::quiet_NaN())));
  CHECK(std::isnan(vmath::tanh(std::numeric_limits<float>::quiet_NaN())));
  // The double versions are the library's.
  CHECK(vmath::exp(0.5) == std::exp(0.5));
  CHECK(vmath::sigmoid(-3.0) == doctest::Approx(1.0 / (1.0 + std::exp(3.0))).epsilon(1e-15));
}

TEST_CASE("vector_math: expm1_float is within 2 ulp of expm1, near 0 as well, and -1, inf, NaN at the edges") {
  double worst = 0;
  float worst_x = 0;
  for (float x : sweep(-100.0f, 100.0f)) {
    const double want = std::expm1(static_cast<double>(x));
    if (std::abs(want) > 3.4e38) continue;  // past FLT_MAX
    const double e = ulps(vmath::expm1_float(x), want);
    if (e > worst) worst = e, worst_x = x;
  }
  INFO("worst at x = " << worst_x);
  CHECK(worst <= 2.0);
  // Tiny arguments: e^x - 1 = x to float precision (exp(x) - 1 would give 0 or a multiple of 2^-24).
  CHECK(vmath::expm1_float(1e-10f) == 1e-10f);
  CHECK(vmath::expm1_float(-3e-9f) == -3e-9f);
  CHECK(vmath::expm1_float(0.0f) == 0.0f);
  CHECK(vmath::expm1_float(-20.0f) == -1.0f);
  CHECK(vmath::expm1_float(-1000.0f) == -1.0f);
  CHECK(vmath::expm1_float(-std::numeric_limits<float>::infinity()) == -1.0f);
  CHECK(vmath::expm1_float(88.73f) == std::numeric_limits<float>::infinity());
  CHECK(std::isfinite(vmath::expm1_float(88.72f)));
  CHECK(std::isnan(vmath::expm1_float(std::numeric_limits<float>::quiet_NaN())));
  CHECK(vmath::expm1(0.25) == std::expm1(0.25));  // double: the library's
}

// The kernels call these in loops the compiler vectorizes (`#pragma omp simd`):
// there every choice (out of range, the top exponent, the sign) is a mask on
// bits, not a branch. The same checks as above, on the vectorized form.
TEST_CASE("vector_math: exp, sigmoid and tanh in a vectorized loop, edges included") {
  constexpr float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> xs = sweep(-100.0f, 100.0f);
  const std::vector<float> edges{inf, -inf, nan, -nan, 0.0f, -0.0f, 88.72f, 88.73f, -87.336f, -87.34f,
                                 1e-30f, -1e-30f, 1e30f, -1e30f, std::numeric_limits<float>::denorm_min()};
  xs.insert(xs.end(), edges.begin(), edges.end());
  const int64_t n = static_cast<int64_t>(xs.size());
  std::vector<float> e(n), s(n), t(n);
  const float* x = xs.data();
  float *pe = e.data(), *ps = s.data(), *pt = t.data();
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    pe[i] = vmath::exp(x[i]);
    ps[i] = vmath::sigmoid(x[i]);
    pt[i] = vmath::tanh(x[i]);
  }
  double exp_worst = 0, sigmoid_worst = 0, tanh_worst = 0;
  int64_t wrong_edges = 0, wrong_signs = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]);
    if (std::isnan(d)) {
      CHECK(std::isnan(e[i]));
      CHECK(std::isnan(s[i]));
      CHECK(std::isnan(t[i]));
      continue;
    }
    if (d > 88.7228394) wrong_edges += e[i] != inf;
    else if (d < -87.3365448) wrong_edges += e[i] != 0.0f;
    else exp_worst = std::max(exp_worst, ulps(e[i], std::exp(d)));
    const double sig = 1.0 / (1.0 + std::exp(-d));
    if (sig > 1e-37) sigmoid_worst = std::max(sigmoid_worst, ulps(s[i], sig));
    tanh_worst = std::max(tanh_worst, std::abs(static_cast<double>(t[i]) - std::tanh(d)));
    wrong_signs += std::signbit(t[i]) != (d < 0);  // tanh(-0) is +0
  }
  CHECK(wrong_edges == 0);
  CHECK(wrong_signs == 0);
  CHECK(exp_worst <= 2.0);
  CHECK(sigmoid_worst <= 4.0);
  CHECK(tanh_worst <= 3e-7);
}

}  // namespace loom
