// random.cpp: CPU random fills and dropout. Element i uses Philox block offset + i/4, word i%4,
// so the result is the same whatever the thread count. The per-element math is in
// engine/philox.h, shared with cuda/random.cu: both devices give the same numbers.
// Dropout's forward can keep its mask as bits, one word per 64 elements, from
// which the backward applies it again without drawing.
#include <algorithm>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"
#include "engine/cpu/philox_lanes.h"
#include "engine/elementwise_functors.h"
#include "engine/philox.h"

namespace loom {

void CpuBackend::random(RandomKind kind, const Tensor& out, double a, double b, uint64_t seed, uint64_t offset) {
  dispatch_float(out.dtype(), "random", [&](auto zero) {
    using T = decltype(zero);
    T* o = out.data<T>();
    const int64_t n = out.numel();
    const int64_t blocks = (n + 3) / 4;
    cpu::parallel_for(blocks, 16, [&](int64_t b0, int64_t b1) {
      for (int64_t blk = b0; blk < b1; ++blk) {
        const auto words = philox4x32(offset + static_cast<uint64_t>(blk), seed);
        for (int w = 0; w < 4; ++w) {
          const int64_t i = blk * 4 + w;
          if (i >= n) break;
          o[i] = static_cast<T>(sample(kind, words, w, a, b));
        }
      }
    });
  });
}

namespace {

// The keep bits of elements [0, count) of a 64-element group, count ≤ 64: bit j
// set where word j keeps its element; the bits past count stay 0. A whole group
// is 4 compares in AVX-512 (8 in AVX2: x ≤ last ⇔ max(x, last) = last).
uint64_t keep_bits_of(const uint32_t* words, int64_t count, uint32_t last_kept) {
#if defined(__AVX512F__)
  if (count == 64) {
    const __m512i last = _mm512_set1_epi32(static_cast<int>(last_kept));
    uint64_t bits = 0;
    for (int q = 0; q < 4; ++q)
      bits |= static_cast<uint64_t>(_mm512_cmple_epu32_mask(_mm512_loadu_si512(words + 16 * q), last)) << (16 * q);
    return bits;
  }
#elif defined(__AVX2__)
  if (count == 64) {
    const __m256i last = _mm256_set1_epi32(static_cast<int>(last_kept));
    uint64_t bits = 0;
    for (int q = 0; q < 8; ++q) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words + 8 * q));
      const __m256i kept = _mm256_cmpeq_epi32(_mm256_max_epu32(w, last), last);
      bits |= static_cast<uint64_t>(_mm256_movemask_ps(_mm256_castsi256_ps(kept))) << (8 * q);
    }
    return bits;
  }
#endif
  uint64_t bits = 0;
  for (int64_t j = 0; j < count; ++j) bits |= static_cast<uint64_t>(words[j] <= last_kept) << j;
  return bits;
}

// kByteMask[b][j] = bit j of the byte b, as 0 or 1: the backward's mask for 8
// elements in one vectorizable row.
struct ByteMasks {
  float m[256][8];
  ByteMasks() {
    for (int b = 0; b < 256; ++b)
      for (int j = 0; j < 8; ++j) m[b][j] = static_cast<float>((b >> j) & 1);
  }
};
const ByteMasks kByteMask;

}  // namespace

void CpuBackend::dropout(const Tensor& x, const Tensor& out, double p, uint64_t seed, uint64_t offset,
                         const Tensor& keep_bits, bool relu_first) {
  dispatch_float(out.dtype(), "dropout", [&](auto zero) {
    using T = decltype(zero);
    const T* in = x.data<T>();
    T* o = out.data<T>();
    uint64_t* bits = keep_bits.defined() ? reinterpret_cast<uint64_t*>(keep_bits.data<int64_t>()) : nullptr;
    const int64_t n = out.numel();
    const double keep = 1.0 - p;
    const uint32_t last_kept = dropout_last_kept(keep);
    const T scale = static_cast<T>(1.0 / keep);
    // Chunks of whole blocks: the words of a chunk (cpu/philox_lanes.h) into a buffer
    // that stays in L1, then one vectorized pass applies them. A chunk's 1024
    // elements are 16 whole words of keep bits.
    constexpr int64_t kChunkBlocks = 256;
    const int64_t blocks = (n + 3) / 4, chunks = (blocks + kChunkBlocks - 1) / kChunkBlocks;
    cpu::parallel_for(chunks, kChunkBlocks * 4 * 16, [&](int64_t c0, int64_t c1) {
      alignas(64) uint32_t words[4 * kChunkBlocks];
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t first = c * kChunkBlocks * 4, count = std::min<int64_t>(kChunkBlocks * 4, n - first);
        cpu::philox_words(words, offset + static_cast<uint64_t>(c * kChunkBlocks), static_cast<uint64_t>((count + 3) / 4),
                          seed);
        const T* src = in + first;
        T* dst = o + first;  // may be src: each element is read before it is written
        if (relu_first) {
#pragma omp simd
          for (int64_t i = 0; i < count; ++i)
            dst[i] = fn::Relu{}(src[i], T(0)) * dropout_factor_32(words[i], last_kept, scale);
        } else {
#pragma omp simd
          for (int64_t i = 0; i < count; ++i) dst[i] = src[i] * dropout_factor_32(words[i], last_kept, scale);
        }
        if (bits != nullptr)
          for (int64_t g = 0; g * 64 < count; ++g)
            bits[first / 64 + g] = keep_bits_of(words + g * 64, std::min<int64_t>(64, count - g * 64), last_kept);
      }
    });
  });
}

void CpuBackend::dropout_backward(const Tensor& grad_out, const Tensor& keep_bits, double p, const Tensor& relu_input,
                                  const Tensor& out) {
  dispatch_float(out.dtype(), "dropout_backward", [&](auto zero) {
    using T = decltype(zero);
    const T* in = grad_out.data<T>();
    const T* relu_x = relu_input.defined() ? relu_input.data<T>() : nullptr;
    T* o = out.data<T>();
    const uint64_t* bits = reinterpret_cast<const uint64_t*>(keep_bits.data<int64_t>());
    const int64_t n = out.numel(), groups = (n + 63) / 64;
    const T scale = static_cast<T>(1.0 / (1.0 - p));
    cpu::parallel_for(groups, 64, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) {
        const uint64_t word = bits[g];
        const int64_t first = g * 64, count = std::min<int64_t>(64, n - first);
        const T* src = in + first;
        T* dst = o + first;  // may be src
        // src · m · scale with m 0 or 1 has the bits of src · (m ? scale : 0): src · 1
        // is src, and src · 0 (±0, or NaN) times a positive finite scale is itself.
        if (count == 64) {
          for (int byte = 0; byte < 8; ++byte) {
            const float* m = kByteMask.m[(word >> (8 * byte)) & 0xFF];
#pragma omp simd
            for (int j = 0; j < 8; ++j) dst[8 * byte + j] = src[8 * byte + j] * static_cast<T>(m[j]) * scale;
          }
        } else {
          for (int64_t j = 0; j < count; ++j) dst[j] = src[j] * (((word >> j) & 1) != 0 ? scale : T(0));
        }
        // Then ReLU's rule on the result, as relu_backward multiplies.
        if (relu_x != nullptr) {
          const T* x = relu_x + first;
#pragma omp simd
          for (int64_t j = 0; j < count; ++j) dst[j] = fn::ReluBackward{}(dst[j], x[j]);
        }
      }
    });
  });
}

}  // namespace loom
