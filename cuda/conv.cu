// conv.cu: CUDA kernels of the depth-wise causal 1-D convolution.
//
// As on the CPU (engine/cpu/conv.cpp), x [L, ..., C] is walked as L·B rows of C
// channels (B = the product of the middle dims), row r = t·B + b, so the input
// that tap k reads for row r lies (K-1-k)·B rows earlier. out and grad_x have one
// thread per element, each summing its K taps in the CPU's order.
//
// grad_weight and grad_bias sum over every row. No atomics: the rows are cut
// into chunks whose size depends on the shape only, one thread per (chunk,
// channel) sums its chunk in double, and the chunks are then added in order, and
// for a shared kernel (weight [1, K]) the channels too, as on the CPU. The
// result has the same bits on every run.
#include <algorithm>
#include <type_traits>

#include "cuda/cuda_backend.h"
#include "cuda/layout.cuh"
#include "engine/kernels/conv.h"

namespace loom::cuda {

namespace {

template <class T>
__global__ void conv_forward_kernel(const T* x, const T* w, const T* bias, T* out, ConvDims d) {
  const int64_t C = d.C, K = d.K, B = d.B;
  LOOM_GRID_STRIDE_LOOP(e, d.L * B * C) {
    const int64_t r = e / C, c = e % C, t = r / B;
    const int64_t wc = d.shared ? 0 : c;
    T o = bias ? bias[wc] : T(0);
    // Tap k reads time t-(K-1)+k; taps before time 0 read zeros and are skipped.
    for (int64_t k = t >= K - 1 ? 0 : K - 1 - t; k < K; ++k) o += w[wc * K + k] * x[(r - (K - 1 - k) * B) * C + c];
    out[e] = o;
  }
}

// grad_x[s] = sum_k weight[k] * g[s + K-1-k] (terms past the end are zero).
template <class T>
__global__ void conv_grad_x_kernel(const T* g, const T* w, T* gx, ConvDims d) {
  const int64_t C = d.C, K = d.K, B = d.B, L = d.L;
  LOOM_GRID_STRIDE_LOOP(e, L * B * C) {
    const int64_t r = e / C, c = e % C, t = r / B;
    const int64_t wc = d.shared ? 0 : c;
    T o = 0;
    for (int64_t k = t + K - L > 0 ? t + K - L : 0; k < K; ++k) o += w[wc * K + k] * g[(r + (K - 1 - k) * B) * C + c];
    gx[e] = o;
  }
}

// partial[chunk][k][c] = sum over the chunk's rows of g[t] * x[t-(K-1)+k] (k < K)
// and partial[chunk][K][c] = sum of g[t]: one thread per (chunk, channel), in double;
// a part that is not wanted is written as zeros.
template <class T>
__global__ void conv_param_partial_kernel(const T* g, const T* x, double* partial, ConvDims d, int64_t chunk_rows,
                                          int64_t chunks, bool want_weight, bool want_bias) {
  const int64_t C = d.C, K = d.K, B = d.B, rows = d.L * B;
  LOOM_GRID_STRIDE_LOOP(e, chunks * C) {
    const int64_t ch = e / C, c = e % C;
    const int64_t r0 = ch * chunk_rows, r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
    double* p = partial + ch * (K + 1) * C;
    // Every entry is written, wanted or not: conv_sum_chunks_kernel adds the
    // whole row, and a sum over uninitialised scratch is undefined (and what
    // compute-sanitizer's initcheck reports) even when its result is unused.
    for (int64_t k = 0; k < K; ++k) {
      double acc = 0.0;
      if (want_weight) {
        // Rows at times t < K-1-k read x before time 0: zero, skipped.
        const int64_t first = (K - 1 - k) * B;
        for (int64_t r = r0 > first ? r0 : first; r < r1; ++r)
          acc += static_cast<double>(g[r * C + c]) * x[(r - (K - 1 - k) * B) * C + c];
      }
      p[k * C + c] = acc;
    }
    double bias_acc = 0.0;
    if (want_bias)
      for (int64_t r = r0; r < r1; ++r) bias_acc += g[r * C + c];
    p[K * C + c] = bias_acc;
  }
}

// total[i] = sum over chunks of partial[chunk][i], i < (K+1)·C, in chunk order.
__global__ void conv_sum_chunks_kernel(const double* partial, double* total, int64_t chunks, int64_t stride) {
  LOOM_GRID_STRIDE_LOOP(i, stride) {
    double s = 0.0;
    for (int64_t ch = 0; ch < chunks; ++ch) s += partial[ch * stride + i];
    total[i] = s;
  }
}

// Per-channel totals -> grad_weight [Cw, K] and grad_bias [Cw]; a shared kernel
// (Cw = 1) sums its totals over the channels, in channel order.
template <class T>
__global__ void conv_param_finish_kernel(const double* total, T* gw, T* gb, ConvDims d) {
  const int64_t C = d.C, K = d.K, Cw = d.shared ? 1 : C;
  LOOM_GRID_STRIDE_LOOP(e, Cw * (K + 1)) {
    const int64_t c = e / (K + 1), k = e % (K + 1);  // k == K: the bias
    T* dst = k < K ? (gw ? gw + c * K + k : nullptr) : (gb ? gb + c : nullptr);
    if (!dst) continue;
    double s = 0.0;
    if (d.shared) {
      for (int64_t ch = 0; ch < C; ++ch) s += total[k * C + ch];
    } else {
      s = total[k * C + c];
    }
    *dst = static_cast<T>(s);
  }
}

}  // namespace

void CudaBackend::causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out) {
  kernels::with_conv_forward(x, weight, bias, out, [](const auto& a) {
    using T = typename std::decay_t<decltype(a)>::Value;
    const int64_t n = a.d.L * a.d.B * a.d.C;
    if (n == 0) return;
    conv_forward_kernel<T><<<grid_for(n), kBlockThreads, 0, stream()>>>(a.x, a.weight, a.bias, a.out, a.d);
    LOOM_CUDA_CHECK_LAUNCH("causal_conv1d");
  });
}

void CudaBackend::causal_conv1d_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight,
                                         const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias) {
  const char* op = "causal_conv1d_backward";
  kernels::with_conv_backward(grad_out, x, weight, grad_x, grad_weight, grad_bias, [&](const auto& a) {
    using T = typename std::decay_t<decltype(a)>::Value;
    const ConvDims& d = a.d;
    const int64_t rows = d.L * d.B, n = rows * d.C;
    if (a.grad_x && n > 0) {
      conv_grad_x_kernel<T><<<grid_for(n), kBlockThreads, 0, stream()>>>(a.grad_out, a.weight, a.grad_x, d);
      LOOM_CUDA_CHECK_LAUNCH(op);
    }
    const bool want_weight = a.grad_weight != nullptr, want_bias = a.grad_bias != nullptr;
    if (!want_weight && !want_bias) return;
    if (n == 0) {  // sums over no rows (or no channels)
      if (want_weight) fill(grad_weight, 0.0);
      if (want_bias) fill(grad_bias, 0.0);
      return;
    }
    // At most 64 chunks (the partial sums stay O(K·C)), each of at least 16 rows.
    const int64_t chunk_rows = std::max<int64_t>(16, (rows + 63) / 64);
    const int64_t chunks = (rows + chunk_rows - 1) / chunk_rows, stride = (d.K + 1) * d.C;
    // Scratch from the caching allocator; freeing it before the kernels finish is
    // safe, since all work is queued on the one stream.
    const Tensor partial = Tensor::empty({chunks, stride}, DType::f64, Device::cuda);
    const Tensor total = Tensor::empty({stride}, DType::f64, Device::cuda);
    conv_param_partial_kernel<T><<<grid_for(chunks * d.C), kBlockThreads, 0, stream()>>>(
        a.grad_out, a.x, partial.data<double>(), d, chunk_rows, chunks, want_weight, want_bias);
    LOOM_CUDA_CHECK_LAUNCH(op);
    conv_sum_chunks_kernel<<<grid_for(stride), kBlockThreads, 0, stream()>>>(partial.data<double>(),
                                                                            total.data<double>(), chunks, stride);
    LOOM_CUDA_CHECK_LAUNCH(op);
    const int64_t cw = d.shared ? 1 : d.C;
    conv_param_finish_kernel<T><<<grid_for(cw * (d.K + 1)), kBlockThreads, 0, stream()>>>(
        total.data<double>(), a.grad_weight, a.grad_bias, d);
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

}  // namespace loom::cuda
