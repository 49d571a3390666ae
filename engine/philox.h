// philox.h: the Philox-4x32-10 generator and the per-element transforms of the
// random fills, written once for both devices (LOOM_HD).
//
// engine/cpu/random.cpp and cuda/random.cu both call these, so a fill gives the
// same bits on the CPU and on the GPU. Every step is an IEEE-exact operation
// (multiply, divide, sqrt, explicit fma) except log/sin/cos in sample_normal,
// whose last bit in float64 may differ between libm and CUDA's math library.
// The explicit std::fma matters: compilers may fuse `a + b * c` or not, and
// they do not agree, so the fused form is written out for both.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "engine/host_device.h"

namespace loom {

// The Philox-4x32-10 bijection on a full 128-bit counter with a 64-bit key
// (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011): ten
// rounds of two 32x32->64 multiplies, with the key bumped by the Weyl constants
// between rounds. Random123's known-answer vectors are stated in this form.
LOOM_HD std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kMul0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kMul1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return {c0, c1, c2, c3};
}

// One block as loom's fills use it: four 32-bit random words for a 64-bit
// counter (the upper two counter words are 0) and a 64-bit key.
LOOM_HD std::array<uint32_t, 4> philox4x32(uint64_t counter, uint64_t key) {
  return philox4x32_10({static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0u, 0u},
                       {static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32)});
}

// The words of `blocks` consecutive counters from `counter` into out[0, 4·blocks),
// in order (host only). A plain loop without branches over plain arguments: the
// compiler vectorizes it, Philox's multiplies included.
inline void philox4x32_blocks(uint32_t* __restrict out, uint64_t counter, uint64_t blocks, uint64_t key) {
  for (uint64_t b = 0; b < blocks; ++b) {
    const auto [w0, w1, w2, w3] = philox4x32(counter + b, key);
    out[4 * b] = w0;
    out[4 * b + 1] = w1;
    out[4 * b + 2] = w2;
    out[4 * b + 3] = w3;
  }
}

// Uniform in [0, 1) from 32 random bits (exact in double: bits * 2^-32).
LOOM_HD double uint_to_unit(uint32_t bits) { return bits * (1.0 / 4294967296.0); }

// ---- per-element transforms (element i uses word i % 4 of block offset + i / 4) ----

// Uniform in [low, high).
LOOM_HD double sample_uniform(uint32_t bits, double low, double high) {
  return std::fma(high - low, uint_to_unit(bits), low);
}

// 1 with probability p, else 0.
LOOM_HD double sample_bernoulli(uint32_t bits, double p) { return uint_to_unit(bits) < p ? 1.0 : 0.0; }

// Dropout keeps an element where bernoulli(keep = 1 - p) draws 1: where
// bits·2^-32 < keep. Both sides scale exactly by 2^32, so for an integer word
// that is bits < ceil(keep·2^32): the same mask from one integer comparison,
// where converting each word to double halved the vector width of the loop.
// The threshold is in [0, 2^32], so it needs 64 bits.
LOOM_HD uint64_t dropout_keep_threshold(double keep) {
  return static_cast<uint64_t>(std::ceil(keep * 4294967296.0));
}

// Dropout's factor for one element: `scale` = T(1 / keep) where the word is below
// `threshold` (dropout_keep_threshold), else 0; x times it is the same bits as x
// times the bernoulli mask multiplied by the scale.
template <class T>
LOOM_HD T dropout_factor(uint32_t bits, uint64_t threshold, T scale) {
  return bits < threshold ? scale : T(0);
}

// The same test in 32 bits, for the CPU's vector loops (16 lanes of AVX-512 where
// a 64-bit compare fills 8): bits < threshold is bits <= threshold - 1, the last
// word kept. Needs keep > 0 (dropout's p < 1), so that the threshold is at least 1.
LOOM_HD uint32_t dropout_last_kept(double keep) { return static_cast<uint32_t>(dropout_keep_threshold(keep) - 1); }

template <class T>
LOOM_HD T dropout_factor_32(uint32_t bits, uint32_t last_kept, T scale) {
  return bits <= last_kept ? scale : T(0);
}

// Box-Muller on the word pair (even, odd) of one block: the even element of the
// pair takes the cosine, the odd one the sine.
LOOM_HD double sample_normal(uint32_t even_bits, uint32_t odd_bits, bool odd, double mean, double stddev) {
  const double u1 = (static_cast<double>(even_bits) + 1.0) / 4294967297.0;  // in (0, 1]: log is finite
  const double u2 = uint_to_unit(odd_bits);
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double angle = 6.283185307179586 * u2;
  return std::fma(stddev, r * (odd ? std::sin(angle) : std::cos(angle)), mean);
}

// The value of element w (0..3) of a block for the given kind of fill; `Kind` is
// RandomKind (engine/backend.h), a template so this header stays below it.
template <class Kind>
LOOM_HD double sample(Kind kind, const std::array<uint32_t, 4>& words, int w, double a, double b) {
  switch (kind) {
    case Kind::uniform: return sample_uniform(words[w], a, b);
    case Kind::bernoulli: return sample_bernoulli(words[w], a);
    case Kind::normal: return sample_normal(words[w & ~1], words[w | 1], (w & 1) != 0, a, b);
  }
  return 0.0;
}

}  // namespace loom
