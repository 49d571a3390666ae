// sum_normalise.cu: CUDA kernels of the sum normalisation; the formulas are in
// engine/kernels/sum_normalise.h.
//
// One thread per row: the rows of the fast weights' features are short (16 to
// a few hundred entries) and many (one per position, batch item and head). A
// thread walks its row as the CPU loops do, the sums in double in entry order,
// so the results equal the CPU's up to nvcc's fused multiply-adds inside the
// ELU. No shared memory, no atomics.
#include <type_traits>

#include "cuda/cuda_backend.h"
#include "cuda/layout.cuh"
#include "engine/kernels/sum_normalise.h"

namespace loom::cuda {

namespace {

template <class T>
__global__ void sum_normalise_forward_kernel(kernels::SumNormaliseForward<T> a) {
  LOOM_GRID_STRIDE_LOOP(row, a.rows) {
    const T* x = a.x + a.rows_of_x.offset(row);
    T* out = a.out + row * a.n;
    double acc = 0.0;
    for (int64_t j = 0; j < a.n; ++j) {
      const T e = kernels::feature_of(x[j], a.elu_plus_one);
      if (a.features) a.features[row * a.n + j] = e;
      out[j] = e;  // divided below
      acc += e;
    }
    const T den = static_cast<T>(acc) + a.eps;
    a.denominator[row] = den;
    for (int64_t j = 0; j < a.n; ++j) out[j] = out[j] / den;
  }
}

template <class T>
__global__ void sum_normalise_backward_kernel(kernels::SumNormaliseBackward<T> a) {
  LOOM_GRID_STRIDE_LOOP(row, a.rows) {
    const T* g = a.grad_out + row * a.n;
    const T* e = a.features + row * a.n;
    T* gx = a.grad_x + row * a.n;
    const T den = a.denominator[row];
    double acc = 0.0;
    for (int64_t j = 0; j < a.n; ++j) acc += -((g[j] / den) * e[j] / den);
    const T gs = static_cast<T>(acc);
    for (int64_t j = 0; j < a.n; ++j) {
      const T ge = g[j] / den + gs;
      gx[j] = a.elu_plus_one ? ge * kernels::elu_plus_one_slope(e[j]) : ge;
    }
  }
}

}  // namespace

void CudaBackend::sum_normalise(const Tensor& x, double eps, bool elu_plus_one, const Tensor& out,
                                const Tensor& features, const Tensor& denominator) {
  kernels::with_sum_normalise_forward(x, eps, elu_plus_one, out, features, denominator, [](const auto& a) {
    using T = typename std::decay_t<decltype(a)>::Value;
    if (a.rows == 0) return;
    sum_normalise_forward_kernel<T><<<grid_for(a.rows), kBlockThreads, 0, stream()>>>(a);
    LOOM_CUDA_CHECK_LAUNCH("sum_normalise");
  });
}

void CudaBackend::sum_normalise_backward(const Tensor& grad_out, const Tensor& features, const Tensor& denominator,
                                         bool elu_plus_one, const Tensor& grad_x) {
  kernels::with_sum_normalise_backward(grad_out, features, denominator, elu_plus_one, grad_x, [](const auto& a) {
    using T = typename std::decay_t<decltype(a)>::Value;
    if (a.rows == 0) return;
    sum_normalise_backward_kernel<T><<<grid_for(a.rows), kBlockThreads, 0, stream()>>>(a);
    LOOM_CUDA_CHECK_LAUNCH("sum_normalise_backward");
  });
}

}  // namespace loom::cuda
