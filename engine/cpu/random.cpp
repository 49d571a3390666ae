// random.cpp: CPU random fills. Element i uses Philox block offset + i/4, word i%4,
// so the result is the same whatever the thread count.
#include <cmath>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"
#include "engine/random.h"

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
          double v = 0.0;
          switch (kind) {
            case RandomKind::uniform: v = a + (b - a) * uint_to_unit(words[w]); break;
            case RandomKind::bernoulli: v = uint_to_unit(words[w]) < a ? 1.0 : 0.0; break;
            case RandomKind::normal: {
              // Box-Muller on word w and its neighbour in the block (w ^ 1).
              const double u1 = (static_cast<double>(words[w & ~1]) + 1.0) / 4294967297.0;
              const double u2 = uint_to_unit(words[w | 1]);
              const double r = std::sqrt(-2.0 * std::log(u1));
              const double angle = 6.283185307179586 * u2;
              v = a + b * r * ((w & 1) ? std::sin(angle) : std::cos(angle));
              break;
            }
          }
          o[i] = static_cast<T>(v);
        }
      }
    });
  });
}

}  // namespace loom
