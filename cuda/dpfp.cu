// dpfp.cu: CUDA kernels of the DPFP feature map; the formulas are in
// engine/kernels/dpfp.h.
//
// r = relu([x, -x]) (2n entries per row) is never stored: each thread reads the
// two entries of x a product needs and applies the relu itself. Forward: one
// thread per output element (row, i, j). Backward: one thread per element of x
// (row, c); it sums dr[c] and dr[n + c] over i in the CPU kernel's order (nvcc
// may fuse a multiply and an add: equal to the CPU to rounding). No atomics.
#include <type_traits>

#include "cuda/cuda_backend.h"
#include "cuda/layout.cuh"
#include "engine/kernels/dpfp.h"

namespace loom::cuda {

namespace {

using kernels::relu_pair_at;

template <class T>
__global__ void dpfp_forward_kernel(const T* x, T* out, int64_t rows, int64_t n, int64_t nu) {
  const int64_t m = 2 * n;
  LOOM_GRID_STRIDE_LOOP(e, rows * m * nu) {
    const int64_t row = e / (m * nu), rest = e % (m * nu);
    const int64_t i = rest / m + 1, j = rest % m;
    const T* xr = x + row * n;
    out[e] = relu_pair_at(xr, n, j) * relu_pair_at(xr, n, (j - i + m) % m);
  }
}

// dr[k] = Σ_i g_i[k] · r[(k - i) mod 2n] + g_i[(k + i) mod 2n] · r[(k + i) mod 2n].
template <class T>
__device__ T dr_at(const T* g, const T* xr, int64_t n, int64_t nu, int64_t k) {
  const int64_t m = 2 * n;
  T acc = T(0);
  for (int64_t i = 1; i <= nu; ++i) {
    const T* gi = g + (i - 1) * m;
    const int64_t back = (k - i + m) % m, ahead = (k + i) % m;
    acc = acc + gi[k] * relu_pair_at(xr, n, back);
    acc = acc + gi[ahead] * relu_pair_at(xr, n, ahead);
  }
  return acc;
}

template <class T>
__global__ void dpfp_backward_kernel(const T* g, const T* x, T* gx, int64_t rows, int64_t n, int64_t nu) {
  LOOM_GRID_STRIDE_LOOP(e, rows * n) {
    const int64_t row = e / n, c = e % n;
    const T* xr = x + row * n;
    const T* gr = g + row * 2 * n * nu;
    const T xc = xr[c];
    const T pos = xc > T(0) ? dr_at(gr, xr, n, nu, c) : T(0);
    const T neg = xc < T(0) ? dr_at(gr, xr, n, nu, n + c) : T(0);
    gx[e] = pos - neg;
  }
}

}  // namespace

void CudaBackend::dpfp(const Tensor& x, int64_t nu, const Tensor& out) {
  kernels::with_dpfp_forward(x, nu, out, [](const auto& a) {
    using T = typename std::decay_t<decltype(a)>::Value;
    const int64_t total = a.rows * 2 * a.n * a.nu;
    if (total == 0) return;
    dpfp_forward_kernel<T><<<grid_for(total), kBlockThreads, 0, stream()>>>(a.x, a.out, a.rows, a.n, a.nu);
    LOOM_CUDA_CHECK_LAUNCH("dpfp");
  });
}

void CudaBackend::dpfp_backward(const Tensor& grad_out, const Tensor& x, int64_t nu, const Tensor& grad_x) {
  kernels::with_dpfp_backward(grad_out, x, nu, grad_x, [](const auto& a) {
    using T = typename std::decay_t<decltype(a)>::Value;
    const int64_t total = a.rows * a.n;
    if (total == 0) return;
    dpfp_backward_kernel<T><<<grid_for(total), kBlockThreads, 0, stream()>>>(a.grad_out, a.x, a.grad_x, a.rows,
                                                                            a.n, a.nu);
    LOOM_CUDA_CHECK_LAUNCH("dpfp_backward");
  });
}

}  // namespace loom::cuda
