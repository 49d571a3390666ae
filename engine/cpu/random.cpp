// random.cpp: CPU random fills and dropout. Element i uses Philox block offset + i/4, word i%4,
// so the result is the same whatever the thread count. The per-element math is in
// engine/philox.h, shared with cuda/random.cu: both devices give the same numbers.
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"
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

// Dropout over `blocks` whole blocks of 4 elements, the first with Philox counter
// `counter`. Plain arguments and no branch: the loop vectorizes, Philox included.
template <class T>
void apply_dropout(const T* __restrict in, T* __restrict out, int64_t blocks, uint64_t threshold, T scale,
                   uint64_t seed, uint64_t counter) {
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const auto [w0, w1, w2, w3] = philox4x32(counter + static_cast<uint64_t>(blk), seed);
    out[blk * 4 + 0] = in[blk * 4 + 0] * dropout_factor(w0, threshold, scale);
    out[blk * 4 + 1] = in[blk * 4 + 1] * dropout_factor(w1, threshold, scale);
    out[blk * 4 + 2] = in[blk * 4 + 2] * dropout_factor(w2, threshold, scale);
    out[blk * 4 + 3] = in[blk * 4 + 3] * dropout_factor(w3, threshold, scale);
  }
}

}  // namespace

void CpuBackend::dropout(const Tensor& x, const Tensor& out, double p, uint64_t seed, uint64_t offset) {
  dispatch_float(out.dtype(), "dropout", [&](auto zero) {
    using T = decltype(zero);
    const T* in = x.data<T>();
    T* o = out.data<T>();
    const int64_t n = out.numel();
    const double keep = 1.0 - p;
    const uint64_t threshold = dropout_keep_threshold(keep);
    const T scale = static_cast<T>(1.0 / keep);
    const int64_t full_blocks = n / 4;
    cpu::parallel_for(full_blocks, 16, [&](int64_t b0, int64_t b1) {
      apply_dropout(in + b0 * 4, o + b0 * 4, b1 - b0, threshold, scale, seed, offset + static_cast<uint64_t>(b0));
    });
    if (n % 4 != 0) {  // the last, partial block
      const auto words = philox4x32(offset + static_cast<uint64_t>(full_blocks), seed);
      for (int64_t i = full_blocks * 4; i < n; ++i) o[i] = in[i] * dropout_factor(words[i % 4], threshold, scale);
    }
  });
}

}  // namespace loom
