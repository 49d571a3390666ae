// random.cpp: CPU random fills. Element i uses Philox block offset + i/4, word i%4,
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

}  // namespace loom
