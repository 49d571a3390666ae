// random.cu: CUDA random fills and dropout. Thread t makes Philox block offset + t, i.e.
// elements 4t..4t+3, with the per-element math of engine/philox.h, which the
// CPU kernel (engine/cpu/random.cpp) shares: both devices give the same numbers.
#include "cuda/cuda_backend.h"
#include "cuda/layout.cuh"
#include "engine/philox.h"

namespace loom::cuda {

namespace {

template <class T>
__global__ void random_kernel(T* out, int64_t n, RandomKind kind, double a, double b, uint64_t seed,
                              uint64_t offset) {
  const int64_t blocks = (n + 3) / 4;
  LOOM_GRID_STRIDE_LOOP(blk, blocks) {
    const auto words = philox4x32(offset + static_cast<uint64_t>(blk), seed);
    for (int w = 0; w < 4; ++w) {
      const int64_t i = blk * 4 + w;
      if (i >= n) break;
      out[i] = static_cast<T>(sample(kind, words, w, a, b));
    }
  }
}

template <class T>
__global__ void dropout_kernel(const T* x, T* out, int64_t n, uint64_t threshold, T scale, uint64_t seed,
                               uint64_t offset) {
  const int64_t blocks = (n + 3) / 4;
  LOOM_GRID_STRIDE_LOOP(blk, blocks) {
    const auto words = philox4x32(offset + static_cast<uint64_t>(blk), seed);
    for (int w = 0; w < 4; ++w) {
      const int64_t i = blk * 4 + w;
      if (i >= n) break;
      out[i] = x[i] * dropout_factor(words[w], threshold, scale);
    }
  }
}

}  // namespace

void CudaBackend::random(RandomKind kind, const Tensor& out, double a, double b, uint64_t seed, uint64_t offset) {
  LOOM_CHECK(out.is_contiguous(), "random on cuda: the output must be contiguous, got ", out.describe());
  dispatch_float(out.dtype(), "random", [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = out.numel();
    if (n == 0) return;
    random_kernel<T><<<grid_for((n + 3) / 4), kBlockThreads, 0, stream()>>>(out.data<T>(), n, kind, a, b, seed,
                                                                            offset);
    LOOM_CUDA_CHECK_LAUNCH("random");
  });
}

void CudaBackend::dropout(const Tensor& x, const Tensor& out, double p, uint64_t seed, uint64_t offset) {
  LOOM_CHECK(x.is_contiguous() && out.is_contiguous(), "dropout on cuda: x and out must be contiguous, got ",
             x.describe(), " and ", out.describe());
  dispatch_float(out.dtype(), "dropout", [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = out.numel();
    if (n == 0) return;
    const double keep = 1.0 - p;
    dropout_kernel<T><<<grid_for((n + 3) / 4), kBlockThreads, 0, stream()>>>(
        x.data<T>(), out.data<T>(), n, dropout_keep_threshold(keep), static_cast<T>(1.0 / keep), seed, offset);
    LOOM_CUDA_CHECK_LAUNCH("dropout");
  });
}

}  // namespace loom::cuda
