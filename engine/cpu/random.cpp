// random.cpp: CPU random fills and dropout. Element i uses Philox block offset + i/4, word i%4,
// so the result is the same whatever the thread count. The per-element math is in
// engine/philox.h, shared with cuda/random.cu: both devices give the same numbers.
#include <algorithm>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"
#include "engine/cpu/philox_lanes.h"
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

void CpuBackend::dropout(const Tensor& x, const Tensor& out, double p, uint64_t seed, uint64_t offset) {
  dispatch_float(out.dtype(), "dropout", [&](auto zero) {
    using T = decltype(zero);
    const T* in = x.data<T>();
    T* o = out.data<T>();
    const int64_t n = out.numel();
    const double keep = 1.0 - p;
    const uint32_t last_kept = dropout_last_kept(keep);
    const T scale = static_cast<T>(1.0 / keep);
    // Chunks of whole blocks: the words of a chunk (cpu/philox_lanes.h) into a buffer
    // that stays in L1, then one vectorized pass applies them.
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
#pragma omp simd
        for (int64_t i = 0; i < count; ++i) dst[i] = src[i] * dropout_factor_32(words[i], last_kept, scale);
      }
    });
  });
}

}  // namespace loom
