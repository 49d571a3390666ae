// softmax.cu: CUDA kernels of softmax, log_softmax, cross-entropy and their backwards.
//
// As on the CPU (engine/cpu/softmax.cpp), every kernel works on rows along the
// last axis of contiguous data. One thread block per row: the threads stride
// over the row, then reduce in the block (block.cuh). The numerics follow the
// CPU line by line: the row is shifted by its maximum before exp, and the row
// sums run in double, so the two devices differ only by the rounding of exp and
// by the order of the double sums.
#include "cuda/block.cuh"
#include "cuda/cuda_backend.h"

namespace loom::cuda {

namespace {

// Number of rows of length n in t (t may be empty, n may be 0).
int64_t row_count(const Tensor& t, int64_t n) { return n == 0 ? 0 : t.numel() / n; }

template <class T>
__device__ T row_max(const T* x, int64_t n) {
  T m = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = x[i] > m ? x[i] : m;
  return block_max(m);
}

template <class T>
__global__ void softmax_kernel(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    const T m = row_max(xr, n);
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const T e = std::exp(xr[i] - m);
      if (!log) yr[i] = e;  // each thread rereads only its own elements below
      s += e;
    }
    s = block_sum(s);
    if (log) {
      // (x - m) - log s rather than x - (m + log s): exact where x is near the max.
      const T log_s = static_cast<T>(std::log(s));
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = (xr[i] - m) - log_s;
    } else {
      const T inv_s = static_cast<T>(1.0 / s);
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] *= inv_s;
    }
  }
}

// softmax:     gx = y * (g - sum(g * y))
// log_softmax: gx = g - exp(y) * sum(g)       (exp(y) is the softmax)
template <class T>
__global__ void softmax_backward_kernel(const T* y, const T* g, T* gx, int64_t rows, int64_t n, bool log) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* yr = y + r * n;
    const T* gr = g + r * n;
    T* gxr = gx + r * n;
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      acc += log ? static_cast<double>(gr[i]) : static_cast<double>(gr[i]) * yr[i];
    const T s = static_cast<T>(block_sum(acc));
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      gxr[i] = log ? gr[i] - std::exp(yr[i]) * s : yr[i] * (gr[i] - s);
  }
}

// losses[r] = logsumexp(x[r]) - x[r, t[r]]; targets read through their stride ts.
template <class T>
__global__ void cross_entropy_kernel(const T* x, const int64_t* t, int64_t ts, T* losses, int64_t rows, int64_t n) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    const T m = row_max(xr, n);
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += static_cast<T>(std::exp(xr[i] - m));
    s = block_sum(s);
    if (threadIdx.x == 0) losses[r] = static_cast<T>((static_cast<double>(m) - xr[t[r * ts]]) + std::log(s));
  }
}

// gx[r] = (softmax(x[r]) - onehot(t[r])) * gl[r]; t and gl read through strides ts, gs.
template <class T>
__global__ void cross_entropy_backward_kernel(const T* x, const int64_t* t, int64_t ts, const T* gl, int64_t gs,
                                              T* gx, int64_t rows, int64_t n) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* gxr = gx + r * n;
    const T m = row_max(xr, n);
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const T e = std::exp(xr[i] - m);
      gxr[i] = e;
      s += e;
    }
    s = block_sum(s);
    const T g = gl[r * gs];
    const T scale = static_cast<T>(g / s);
    const int64_t target = t[r * ts];
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      T v = gxr[i] * scale;
      if (i == target) v -= g;
      gxr[i] = v;
    }
  }
}

}  // namespace

void CudaBackend::softmax(const Tensor& x, const Tensor& out, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  dispatch_float(x.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = x.size(-1), rows = row_count(x, n);
    if (rows == 0) return;
    softmax_kernel<T><<<row_blocks(rows), row_threads(n), 0, stream()>>>(x.data<T>(), out.data<T>(), rows, n, log);
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

void CudaBackend::softmax_backward(const Tensor& y, const Tensor& grad_y, const Tensor& grad_x, bool log) {
  const char* op = log ? "log_softmax_backward" : "softmax_backward";
  dispatch_float(y.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = y.size(-1), rows = row_count(y, n);
    if (rows == 0) return;
    softmax_backward_kernel<T><<<row_blocks(rows), row_threads(n), 0, stream()>>>(
        y.data<T>(), grad_y.data<T>(), grad_x.data<T>(), rows, n, log);
    LOOM_CUDA_CHECK_LAUNCH(op);
  });
}

void CudaBackend::cross_entropy(const Tensor& logits, const Tensor& targets, const Tensor& losses) {
  dispatch_float(logits.dtype(), "cross_entropy", [&](auto zero) {
    using T = decltype(zero);
    const int64_t rows = logits.size(0), n = logits.size(1);
    if (rows == 0) return;
    cross_entropy_kernel<T><<<row_blocks(rows), row_threads(n), 0, stream()>>>(
        logits.data<T>(), targets.data<int64_t>(), targets.strides()[0], losses.data<T>(), rows, n);
    LOOM_CUDA_CHECK_LAUNCH("cross_entropy");
  });
}

void CudaBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& grad_losses,
                                         const Tensor& grad_logits) {
  dispatch_float(logits.dtype(), "cross_entropy_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t rows = logits.size(0), n = logits.size(1);
    if (rows == 0) return;
    cross_entropy_backward_kernel<T><<<row_blocks(rows), row_threads(n), 0, stream()>>>(
        logits.data<T>(), targets.data<int64_t>(), targets.strides()[0], grad_losses.data<T>(),
        grad_losses.strides()[0], grad_logits.data<T>(), rows, n);
    LOOM_CUDA_CHECK_LAUNCH("cross_entropy_backward");
  });
}

}  // namespace loom::cuda
