// philox_lanes.h: the words of many consecutive Philox blocks at once, for the CPU's
// dropout (engine/cpu/random.cpp, engine/cpu/attention.cpp).
//
// The same numbers as engine/philox.h's philox4x32_blocks, which is the plain loop:
// the compiler vectorizes that loop over blocks, but Philox's 32×32 → 64-bit
// multiplies come out as long runs of shuffles, and dropout spent most of its time
// there. Here the blocks go through the ten rounds as one vector per word, 8 blocks
// in AVX2 registers or 16 in AVX-512 ones (up to four such sets side by side):
// each multiply is two mul_epu32 (the even and the odd lanes) and two blends, and
// a transpose writes the words out in block order. With AVX2, 2.6× the plain loop's words per second on a Zen 3 (0.89 against
// 2.33 ns per word, one thread); the AVX-512 form's figures are in engine/README.md.
// Other builds run the plain loop.
#pragma once

#include <cstdint>

#include "engine/philox.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace loom::cpu {

#if defined(__AVX2__)
namespace philox_avx2 {

// hi and lo: the high and low words of m · c in each of the 8 lanes (m in every
// 64-bit lane). _mm256_mul_epu32 multiplies the even lanes, so the odd ones are
// shifted down first.
inline void mul_hi_lo(__m256i m, __m256i c, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(c, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(c, 32), m);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

// The 32 words of the blocks counter … counter + 7 into out[0, 32), block by block.
inline void eight_blocks(uint32_t* out, uint64_t counter, uint64_t key) {
  alignas(32) uint32_t low[8], high[8];
  for (int i = 0; i < 8; ++i) {
    low[i] = static_cast<uint32_t>(counter + i);
    high[i] = static_cast<uint32_t>((counter + i) >> 32);
  }
  const __m256i m0 = _mm256_set1_epi64x(0xD2511F53u), m1 = _mm256_set1_epi64x(0xCD9E8D57u);
  __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(low));
  __m256i c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(high));
  __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {  // philox4x32_10's round, lane by lane
    __m256i hi0, lo0, hi1, lo1;
    mul_hi_lo(m0, c0, hi0, lo0);
    mul_hi_lo(m1, c2, hi1, lo1);
    const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c1 = lo1;
    c3 = lo0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  // Transpose: word w of block i goes to out[4i + w]. After the two unpacks, the
  // 128-bit halves of u0 … u3 hold blocks (0 | 4), (1 | 5), (2 | 6), (3 | 7).
  const __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
  const __m256i t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
  const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
  const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
  __m256i* o = reinterpret_cast<__m256i*>(out);
  _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(u0, u1, 0x20));
  _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(u2, u3, 0x20));
  _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(u0, u1, 0x31));
  _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(u2, u3, 0x31));
}

}  // namespace philox_avx2
#endif

#if defined(__AVX512F__)
// GCC 12 warns that the intrinsics' own placeholder operands (_mm512_undefined_*)
// "may be used uninitialized" wherever they are inlined: a false alarm.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
namespace philox_avx512 {

// As philox_avx2::mul_hi_lo, in 16 lanes.
inline void mul_hi_lo(__m512i m, __m512i c, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(c, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(c, 32), m);
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

// The words of the G · 16 blocks counter … counter + 16G − 1 into out[0, 64G),
// block by block. Each group of 16 blocks is one set of four vectors; the groups'
// rounds are independent, so with G > 1 one group's multiplies run while another's
// wait on their latency (one group alone leaves the multiplier idle between
// rounds). G = 4 keeps its 16 state vectors and their temporaries in the 32
// registers; engine/README.md has the timings.
template <int G>
inline void groups_of_sixteen(uint32_t* out, uint64_t counter, uint64_t key) {
  __m512i c0[G], c1[G], c2[G], c3[G];
  for (int g = 0; g < G; ++g) {
    // The counters' low and high words: 64-bit counter + i in two vectors of 8,
    // narrowed to 32 bits (the high words shifted down first).
    const __m512i first = _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(counter + 16 * g)),
                                           _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    const __m512i second = _mm512_add_epi64(first, _mm512_set1_epi64(8));
    c0[g] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(first)), _mm512_cvtepi64_epi32(second), 1);
    c1[g] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(_mm512_srli_epi64(first, 32))),
                               _mm512_cvtepi64_epi32(_mm512_srli_epi64(second, 32)), 1);
    c2[g] = _mm512_setzero_si512();
    c3[g] = _mm512_setzero_si512();
  }
  const __m512i m0 = _mm512_set1_epi64(0xD2511F53u), m1 = _mm512_set1_epi64(0xCD9E8D57u);
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {  // philox4x32_10's round, lane by lane
    const __m512i key0 = _mm512_set1_epi32(static_cast<int>(k0)), key1 = _mm512_set1_epi32(static_cast<int>(k1));
    for (int g = 0; g < G; ++g) {
      __m512i hi0, lo0, hi1, lo1;
      mul_hi_lo(m0, c0[g], hi0, lo0);
      mul_hi_lo(m1, c2[g], hi1, lo1);
      // 0x96: the three-way exclusive or, in one instruction.
      const __m512i n0 = _mm512_ternarylogic_epi32(hi1, c1[g], key0, 0x96);
      const __m512i n2 = _mm512_ternarylogic_epi32(hi0, c3[g], key1, 0x96);
      c1[g] = lo1;
      c3[g] = lo0;
      c0[g] = n0;
      c2[g] = n2;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  // Transpose: word w of block i goes to out[4i + w]. After the two unpacks, the
  // 128-bit quarters of u0 … u3 hold blocks (0 | 4 | 8 | 12), (1 | 5 | 9 | 13),
  // (2 | 6 | 10 | 14), (3 | 7 | 11 | 15); two rounds of quarter shuffles put
  // blocks 0–3, 4–7, 8–11 and 12–15 together.
  for (int g = 0; g < G; ++g) {
    uint32_t* o = out + 64 * g;
    const __m512i t0 = _mm512_unpacklo_epi32(c0[g], c1[g]), t1 = _mm512_unpackhi_epi32(c0[g], c1[g]);
    const __m512i t2 = _mm512_unpacklo_epi32(c2[g], c3[g]), t3 = _mm512_unpackhi_epi32(c2[g], c3[g]);
    const __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
    const __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
    const __m512i low01 = _mm512_shuffle_i32x4(u0, u1, 0x44), low23 = _mm512_shuffle_i32x4(u2, u3, 0x44);
    const __m512i high01 = _mm512_shuffle_i32x4(u0, u1, 0xEE), high23 = _mm512_shuffle_i32x4(u2, u3, 0xEE);
    _mm512_storeu_si512(o + 0, _mm512_shuffle_i32x4(low01, low23, 0x88));
    _mm512_storeu_si512(o + 16, _mm512_shuffle_i32x4(low01, low23, 0xDD));
    _mm512_storeu_si512(o + 32, _mm512_shuffle_i32x4(high01, high23, 0x88));
    _mm512_storeu_si512(o + 48, _mm512_shuffle_i32x4(high01, high23, 0xDD));
  }
}

}  // namespace philox_avx512
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// out[4b + w] = word w of Philox block counter + b, for b < blocks (philox4x32_blocks).
inline void philox_words(uint32_t* out, uint64_t counter, uint64_t blocks, uint64_t key) {
  uint64_t done = 0;
#if defined(__AVX512F__)
  for (; done + 64 <= blocks; done += 64) philox_avx512::groups_of_sixteen<4>(out + 4 * done, counter + done, key);
  for (; done + 32 <= blocks; done += 32) philox_avx512::groups_of_sixteen<2>(out + 4 * done, counter + done, key);
  for (; done + 16 <= blocks; done += 16) philox_avx512::groups_of_sixteen<1>(out + 4 * done, counter + done, key);
#endif
#if defined(__AVX2__)
  for (; done + 8 <= blocks; done += 8) philox_avx2::eight_blocks(out + 4 * done, counter + done, key);
#endif
  philox4x32_blocks(out + 4 * done, counter + done, blocks - done, key);
}

}  // namespace loom::cpu
