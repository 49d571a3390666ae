// norm.cu: CUDA kernels of layer_norm and its backward.
//
// As on the CPU (engine/cpu/norm.cpp), x is contiguous, viewed as [rows, D], and
// each row is normalised on its own: one thread block per row, statistics in
// double with the variance from a second pass over the row (no E[x²] - E[x]²).
//
// grad_weight and grad_bias sum over all rows. No atomics: the rows are cut into
// chunks whose size depends on the shape only, a first kernel sums each chunk
// per column (in double, as on the CPU) and a second adds the chunks up in
// order. No two threads write the same sum, and the result has the same bits on
// every run.
#include <type_traits>

#include "cuda/block.cuh"
#include "cuda/cuda_backend.h"
#include "cuda/layout.cuh"
#include "engine/kernels/norm.h"

namespace loom::cuda {

namespace {

// a * b, rounded, never fused with a later addition into an fma: the backward
// subtracts the mean of these products from each of them, which must give 0
// exactly where all are equal (D = 1), as on the CPU.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

template <class T>
__global__ void layer_norm_kernel(const T* x, const T* w, const T* b, double eps, T* y, T* mean, T* rstd,
                                  int64_t rows, int64_t D) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * D;
    T* yr = y + r * D;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += static_cast<double>(xr[i]);
    const double mu = block_sum(s) / D;
    double ss = 0.0;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      const double d = xr[i] - mu;
      ss += d * d;
    }
    const double rs = 1.0 / std::sqrt(block_sum(ss) / D + eps);
    // The mean as a head and a tail, mean = hi + lo: (x - hi) - lo keeps the
    // precision a mean rounded to T would lose when it is large against the spread.
    const T mu_hi = static_cast<T>(mu), mu_lo = static_cast<T>(mu - mu_hi), rs_t = static_cast<T>(rs);
    if (threadIdx.x == 0) {
      mean[r] = mu_hi;
      rstd[r] = rs_t;
    }
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      T v = ((xr[i] - mu_hi) - mu_lo) * rs_t;
      if (w) v *= w[i];
      if (b) v += b[i];
      yr[i] = v;
    }
  }
}

// grad_x of one row per block, with gxhat = g * weight:
//   grad_x = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))
template <class T>
__global__ void layer_norm_grad_x_kernel(const T* g, const T* x, const T* w, const T* mean, const T* rstd, T* gx,
                                         int64_t rows, int64_t D) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* gr = g + r * D;
    const T* xr = x + r * D;
    T* gxr = gx + r * D;
    const T mu = mean[r], rs = rstd[r];
    double s1 = 0.0, s2 = 0.0;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      const T gh = w ? mul_rn(gr[i], w[i]) : gr[i];
      gxr[i] = gh;  // gxhat until the last loop (each thread rereads its own elements)
      s1 += static_cast<double>(gh);
      s2 += static_cast<double>(gh) * ((xr[i] - mu) * rs);
    }
    const T a = static_cast<T>(block_sum(s1) / D), c = static_cast<T>(block_sum(s2) / D);
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      const T xhat = (xr[i] - mu) * rs;
      gxr[i] = rs * (gxr[i] - a - xhat * c);
    }
  }
}

// Per-chunk column sums of g * xhat (pw) and g (pb), each [chunks, D] in double.
// Block (column tile, chunk): 32 columns by kRowLanes row lanes; a warp reads 32
// adjacent columns of a row (coalesced), the lanes are added in order at the end.
constexpr int kRowLanes = kBlockThreads / kWarp;

template <class T>
__global__ void layer_norm_param_partial_kernel(const T* g, const T* x, const T* mean, const T* rstd, double* pw,
                                                double* pb, int64_t rows, int64_t D, int64_t chunk_rows) {
  __shared__ double sw[kRowLanes][kWarp], sb[kRowLanes][kWarp];
  const int tx = threadIdx.x % kWarp, ty = threadIdx.x / kWarp;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kWarp + tx;
  const int64_t chunk = blockIdx.y;
  const int64_t r_end = (chunk + 1) * chunk_rows < rows ? (chunk + 1) * chunk_rows : rows;
  double aw = 0.0, ab = 0.0;
  if (c < D) {
    for (int64_t r = chunk * chunk_rows + ty; r < r_end; r += kRowLanes) {
      const double gi = g[r * D + c];
      if (pw) aw += gi * ((x[r * D + c] - mean[r]) * rstd[r]);
      ab += gi;
    }
  }
  sw[ty][tx] = aw;
  sb[ty][tx] = ab;
  __syncthreads();
  if (ty == 0 && c < D) {
    for (int l = 1; l < kRowLanes; ++l) {
      aw += sw[l][tx];
      ab += sb[l][tx];
    }
    if (pw) pw[chunk * D + c] = aw;
    if (pb) pb[chunk * D + c] = ab;
  }
}

// out[c] = sum over chunks of partial[chunk, c], in chunk order.
template <class T>
__global__ void sum_chunks_kernel(const double* partial, T* out, int64_t chunks, int64_t D) {
  LOOM_GRID_STRIDE_LOOP(c, D) {
    double s = 0.0;
    for (int64_t k = 0; k < chunks; ++k) s += partial[k * D + c];
    out[c] = static_cast<T>(s);
  }
}

// Rows per chunk of the parameter sums: at least 32 (each row lane gets 4 rows
// or more), at most 256 chunks (far below gridDim.y's limit of 65535). A
// function of the shape only.
int64_t chunk_rows_for(int64_t rows) { return std::max<int64_t>(32, (rows + 255) / 256); }

}  // namespace

void CudaBackend::layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& out,
                             const Tensor& mean, const Tensor& rstd) {
  kernels::with_layer_norm_forward(x, weight, bias, eps, out, mean, rstd, [](const auto& a) {
    using T = typename std::decay_t<decltype(a)>::Value;
    if (a.rows == 0) return;
    layer_norm_kernel<T><<<row_blocks(a.rows), row_threads(a.D), 0, stream()>>>(a.x, a.weight, a.bias, a.eps, a.out,
                                                                                a.mean, a.rstd, a.rows, a.D);
    LOOM_CUDA_CHECK_LAUNCH("layer_norm");
  });
}

void CudaBackend::layer_norm_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight,
                                      const Tensor& mean, const Tensor& rstd, const Tensor& grad_x,
                                      const Tensor& grad_weight, const Tensor& grad_bias) {
  const char* op = "layer_norm_backward";
  kernels::with_layer_norm_backward(grad_out, x, weight, mean, rstd, grad_x, grad_weight, grad_bias, [&](const auto& a) {
    using T = typename std::decay_t<decltype(a)>::Value;
    const int64_t D = a.D, rows = a.rows;
    if (a.grad_x && rows > 0) {
      layer_norm_grad_x_kernel<T><<<row_blocks(rows), row_threads(D), 0, stream()>>>(
          a.grad_out, a.x, a.weight, a.mean, a.rstd, a.grad_x, rows, D);
      LOOM_CUDA_CHECK_LAUNCH(op);
    }
    if (!a.grad_weight && !a.grad_bias) return;
    if (D == 0) return;
    if (rows == 0) {  // sums over no rows
      if (a.grad_weight) fill(grad_weight, 0.0);
      if (a.grad_bias) fill(grad_bias, 0.0);
      return;
    }
    const int64_t chunk_rows = chunk_rows_for(rows), chunks = (rows + chunk_rows - 1) / chunk_rows;
    // Scratch from the caching allocator; freeing it before the kernels finish is
    // safe, since all work is queued on the one stream.
    auto scratch = [&](const Tensor& wanted) {
      return wanted.defined() ? Tensor::empty({chunks, D}, DType::f64, Device::cuda) : Tensor();
    };
    const Tensor pw = scratch(grad_weight), pb = scratch(grad_bias);
    double* ppw = pw.defined() ? pw.data<double>() : nullptr;
    double* ppb = pb.defined() ? pb.data<double>() : nullptr;
    const dim3 grid(static_cast<unsigned>((D + kWarp - 1) / kWarp), static_cast<unsigned>(chunks));
    layer_norm_param_partial_kernel<T><<<grid, kBlockThreads, 0, stream()>>>(a.grad_out, a.x, a.mean, a.rstd, ppw,
                                                                             ppb, rows, D, chunk_rows);
    LOOM_CUDA_CHECK_LAUNCH(op);
    if (ppw) {
      sum_chunks_kernel<T><<<grid_for(D), kBlockThreads, 0, stream()>>>(ppw, a.grad_weight, chunks, D);
      LOOM_CUDA_CHECK_LAUNCH(op);
    }
    if (ppb) {
      sum_chunks_kernel<T><<<grid_for(D), kBlockThreads, 0, stream()>>>(ppb, a.grad_bias, chunks, D);
      LOOM_CUDA_CHECK_LAUNCH(op);
    }
  });
}

}  // namespace loom::cuda
