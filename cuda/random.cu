// random.cu: CUDA random fills and dropout. Thread t makes Philox block offset + t, i.e.
// elements 4t..4t+3, with the per-element math of engine/philox.h, which the
// CPU kernel (engine/cpu/random.cpp) shares: both devices give the same numbers.
#include "cuda/cuda_backend.h"
#include "cuda/layout.cuh"
#include "engine/elementwise_functors.h"
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

// a(x): ReLU when relu_first (as fn::Relu), else x.
template <class T>
__device__ __forceinline__ T activation(T x, bool relu_first) {
  return relu_first ? fn::Relu{}(x, T(0)) : x;
}

template <class T>
__global__ void dropout_kernel(const T* x, T* out, int64_t n, uint64_t threshold, T scale, uint64_t seed,
                               uint64_t offset, bool relu_first) {
  const int64_t blocks = (n + 3) / 4;
  LOOM_GRID_STRIDE_LOOP(blk, blocks) {
    const auto words = philox4x32(offset + static_cast<uint64_t>(blk), seed);
    for (int w = 0; w < 4; ++w) {
      const int64_t i = blk * 4 + w;
      if (i >= n) break;
      out[i] = activation(x[i], relu_first) * dropout_factor(words[w], threshold, scale);
    }
  }
}

// With the keep bits: thread t makes the 16 blocks of elements 64t … 64t + 63 and
// their word of bits (the bits past n stay 0).
template <class T>
__global__ void dropout_bits_kernel(const T* x, T* out, uint64_t* keep_bits, int64_t n, uint64_t threshold,
                                    T scale, uint64_t seed, uint64_t offset, bool relu_first) {
  const int64_t groups = (n + 63) / 64;
  LOOM_GRID_STRIDE_LOOP(g, groups) {
    uint64_t bits = 0;
    for (int b = 0; b < 16; ++b) {
      const auto words = philox4x32(offset + static_cast<uint64_t>(g * 16 + b), seed);
      for (int w = 0; w < 4; ++w) {
        const int64_t i = g * 64 + b * 4 + w;
        if (i >= n) break;
        const T factor = dropout_factor(words[w], threshold, scale);
        out[i] = activation(x[i], relu_first) * factor;
        if (factor != T(0)) bits |= uint64_t{1} << (b * 4 + w);
      }
    }
    keep_bits[g] = bits;
  }
}

// relu_x: ReLU's input when the forward had one (its rule after dropout's), else null.
template <class T>
__global__ void dropout_backward_kernel(const T* grad_out, const uint64_t* keep_bits, const T* relu_x, T* out,
                                        int64_t n, T scale) {
  LOOM_GRID_STRIDE_LOOP(i, n) {
    const T g = grad_out[i] * (((keep_bits[i / 64] >> (i % 64)) & 1) != 0 ? scale : T(0));
    out[i] = relu_x ? fn::ReluBackward{}(g, relu_x[i]) : g;
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

void CudaBackend::dropout(const Tensor& x, const Tensor& out, double p, uint64_t seed, uint64_t offset,
                          const Tensor& keep_bits, bool relu_first) {
  LOOM_CHECK(x.is_contiguous() && out.is_contiguous(), "dropout on cuda: x and out must be contiguous, got ",
             x.describe(), " and ", out.describe());
  dispatch_float(out.dtype(), "dropout", [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = out.numel();
    if (n == 0) return;
    const double keep = 1.0 - p;
    const uint64_t threshold = dropout_keep_threshold(keep);
    const T scale = static_cast<T>(1.0 / keep);
    if (keep_bits.defined()) {
      dropout_bits_kernel<T><<<grid_for((n + 63) / 64), kBlockThreads, 0, stream()>>>(
          x.data<T>(), out.data<T>(), reinterpret_cast<uint64_t*>(keep_bits.data<int64_t>()), n, threshold, scale,
          seed, offset, relu_first);
    } else {
      dropout_kernel<T><<<grid_for((n + 3) / 4), kBlockThreads, 0, stream()>>>(
          x.data<T>(), out.data<T>(), n, threshold, scale, seed, offset, relu_first);
    }
    LOOM_CUDA_CHECK_LAUNCH("dropout");
  });
}

void CudaBackend::dropout_backward(const Tensor& grad_out, const Tensor& keep_bits, double p,
                                   const Tensor& relu_input, const Tensor& out) {
  LOOM_CHECK(grad_out.is_contiguous() && out.is_contiguous() && (!relu_input.defined() || relu_input.is_contiguous()),
             "dropout_backward on cuda: grad_out and out must be contiguous, got ", grad_out.describe(), " and ",
             out.describe());
  dispatch_float(out.dtype(), "dropout_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = out.numel();
    if (n == 0) return;
    dropout_backward_kernel<T><<<grid_for(n), kBlockThreads, 0, stream()>>>(
        grad_out.data<T>(), reinterpret_cast<const uint64_t*>(keep_bits.data<int64_t>()),
        relu_input.defined() ? relu_input.data<T>() : nullptr, out.data<T>(), n, static_cast<T>(1.0 / (1.0 - p)));
    LOOM_CUDA_CHECK_LAUNCH("dropout_backward");
  });
}

}  // namespace loom::cuda
