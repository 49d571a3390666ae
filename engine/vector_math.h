// vector_math.h: exp, expm1, sigmoid and tanh of floats as plain branch-free
// arithmetic, so that a loop over them vectorizes. glibc's expf is a call the
// compiler cannot vectorize (not without -ffast-math), and in the fused LSTM
// those calls took about half of the forward kernel. Branch-free in the source
// is not enough: GCC 12 turned a `?:` on floats back into a branch and then gave
// up on the loop, so every choice here is a mask on the bits (select below).
// Both compilers build these (LOOM_HD), so the CPU and CUDA kernels that use
// them compute the same function.
//
// exp: x = n·ln 2 + r with n an integer and |r| <= ln(2)/2 (ln 2 split in two
// parts, Cody and Waite, so that r is exact), e^r from Cephes' degree-7 minimax
// polynomial, and 2^n written straight into the exponent bits. Within 2 units in
// the last place of e^x wherever e^x is a normal float (tests/test_vector_math.cpp
// checks it against the double exp); below that, 0 (where e^x < 2^-126, about
// 1.2e-38, a denormal would be); above 88.72, inf; NaN stays NaN.
//
// The double versions are the library's functions: double is for gradient checks,
// where accuracy matters and speed does not.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#ifndef __CUDA_ARCH__
#include <bit>
#endif

#include "engine/host_device.h"

namespace loom::vmath {

// The same 32 bits read as the other type (int32_t <-> float): std::bit_cast,
// which device code lacks.
template <class To, class From>
LOOM_HD To reinterpret_bits(From x) {
  static_assert(sizeof(To) == 4 && sizeof(From) == 4);
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<To, float>) return __int_as_float(x);
  else return __float_as_int(x);
#else
  return std::bit_cast<To>(x);
#endif
}

// Every choice in the float functions below is made on bits, with masks of all
// ones or all zeros, not with ?: on floats: GCC 12 turned those selects back into
// branches (jump threading) and then would not vectorize any loop that called
// them. NaN is neither below nor above any bound, and flows through the
// arithmetic to the result.

// x = n·ln 2 + r, the reduction exp_float and expm1_float share: x outside
// [low, high] is replaced by 0 first (masks below and above say where), so in
// range n stays in [-127, 128].
struct Ln2Reduction {
  int32_t below, above;  // all ones where x < low, x > high
  int32_t n;
  float r;  // |r| <= ln(2)/2, exact (ln 2 split in two parts, Cody and Waite)
};

LOOM_HD Ln2Reduction reduce_by_ln2(float x, float low, float high) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2High = 0.693359375f, kLn2Low = -2.12194440e-4f;  // ln 2 = high + low
  const int32_t below = -static_cast<int32_t>(x < low), above = -static_cast<int32_t>(x > high);
  const float xs = reinterpret_bits<float>(reinterpret_bits<int32_t>(x) & ~(below | above));  // 0 out of range
  // n = xs·log2(e) rounded to the nearest integer: adding 1.5·2^23 leaves n in the
  // low bits of the sum. (A float-to-int conversion or std::floor would stop the
  // loop from vectorizing: either may raise a floating-point flag.)
  constexpr float kRound = 12582912.0f;
  const float shifted = xs * kLog2e + kRound;
  const int32_t n = reinterpret_bits<int32_t>(shifted) - reinterpret_bits<int32_t>(kRound);
  const float nf = shifted - kRound;
  return {below, above, n, (xs - nf * kLn2High) - nf * kLn2Low};
}

// 2^min(n, 127) from its exponent bits (n >= -127; 2^-127 comes out as 0). 2^128
// is not a float: the callers handle n = 128 with a factor 2.
LOOM_HD float power_of_two_to_127(int32_t n) {
  const int32_t n_kept = n < 127 ? n : 127;
  return reinterpret_bits<float>(static_cast<int32_t>(static_cast<uint32_t>(n_kept + 127) << 23));
}

// y where x was in range; inf above; below, the float whose bits are below_bits.
LOOM_HD float with_range_edges(float y, const Ln2Reduction& red, int32_t below_bits) {
  constexpr int32_t kInfinityBits = 0x7f800000;
  return reinterpret_bits<float>((reinterpret_bits<int32_t>(y) & ~(red.below | red.above)) |
                                 (kInfinityBits & red.above) | (below_bits & red.below));
}

LOOM_HD float exp_float(float x) {
  constexpr float kMin = -87.3365448f;  // ln(2^-126): e^x below it is not a normal float
  constexpr float kMax = 88.7228394f;   // ln(FLT_MAX)
  const Ln2Reduction red = reduce_by_ln2(x, kMin, kMax);
  const float r = red.r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  // At n = 128 the factor 2 is 1.0f with one added to its exponent.
  const int32_t top = -static_cast<int32_t>(red.n > 127);
  const float twice_at_top = reinterpret_bits<float>(reinterpret_bits<int32_t>(1.0f) + (top & (1 << 23)));
  return with_range_edges(p * twice_at_top * power_of_two_to_127(red.n), red, 0);  // below: 0
}

template <class T>
LOOM_HD T exp(T x) {
  if constexpr (std::is_same_v<T, float>) return exp_float(x);
  else return std::exp(x);
}

// cond ? a : b, for float chosen on bits with a mask (why: above).
template <class T>
LOOM_HD T select(bool cond, T a, T b) {
  if constexpr (std::is_same_v<T, float>) {
    const int32_t mask = -static_cast<int32_t>(cond);
    return reinterpret_bits<float>((reinterpret_bits<int32_t>(a) & mask) | (reinterpret_bits<int32_t>(b) & ~mask));
  } else {
    return cond ? a : b;
  }
}

// e^x - 1, accurate near 0 where exp(x) - 1 would cancel: x = n·ln 2 + r as in
// exp_float, e^r - 1 from its Taylor series to r^8 (|r| <= ln(2)/2, so the first
// term left out is below 10^-8 of r), and e^x - 1 = 2^n (e^r - 1) + (2^n - 1), whose
// second term is exact for the n that matter. For |x| < ln(2)/2, n = 0 and the
// result is the series alone. Below -88: -1; above 88.72: inf; NaN stays NaN.
LOOM_HD float expm1_float(float x) {
  constexpr float kLow = -88.0f, kMax = 88.7228394f;
  const Ln2Reduction red = reduce_by_ln2(x, kLow, kMax);
  const float r = red.r;
  float p = 1.0f / 40320;
  p = p * r + 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  const float em1 = r + (r * r) * p;  // e^r - 1
  // n = 128 (x > 88.38): 2^n is not a float; there e^x - 1 is e^x = 2 e^r · 2^127.
  const float scale = power_of_two_to_127(red.n);
  const float y = select(red.n > 127, (em1 + 1.0f) * 2.0f * scale, scale * em1 + (scale - 1.0f));
  constexpr int32_t kMinusOneBits = static_cast<int32_t>(0xbf800000u);
  return with_range_edges(y, red, kMinusOneBits);
}

template <class T>
LOOM_HD T expm1(T x) {
  if constexpr (std::is_same_v<T, float>) return expm1_float(x);
  else return std::expm1(x);
}

// 1 / (1 + e^-x) through e^-|x| only, so nothing overflows.
template <class T>
LOOM_HD T sigmoid(T x) {
  const T e = exp(select(x < T(0), x, -x));
  const T s = T(1) / (T(1) + e);
  return select(x < T(0), e * s, s);
}

// tanh(x) = (1 - e^-2|x|) / (1 + e^-2|x|), signed; one exp of a non-positive number.
// Exact to a few units of rounding of 1; near 0 that is a larger share of tanh(x)
// itself, an error sums of such terms never see.
template <class T>
LOOM_HD T tanh(T x) {
  const T e = exp(T(-2) * select(x < T(0), -x, x));
  const T t = (T(1) - e) / (T(1) + e);
  return select(x < T(0), -t, t);
}

}  // namespace loom::vmath
