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

}  // namespace loom
