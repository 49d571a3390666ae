// sum_normalise.cpp: CPU kernels of the sum normalisation; the formulas are in
// engine/kernels/sum_normalise.h.
//
// Rows are independent tasks. Each row is a few passes over n entries that stay
// in L1: the elementwise passes vectorise; the two sums run one entry after
// another in double, the reduction kernel's order (engine/cpu/reduce.cpp), so
// that the bits are the composition's.
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"
#include "engine/kernels/sum_normalise.h"

namespace loom {

using cpu::parallel_for;

namespace {

// Σ_j v_j in double, in entry order, rounded once to T (reduce.cpp's SumAcc).
template <class T>
T sum_in_order(const T* v, int64_t n) {
  double acc = 0.0;
  for (int64_t j = 0; j < n; ++j) acc += v[j];
  return static_cast<T>(acc);
}

template <class T>
void forward_rows(const kernels::SumNormaliseForward<T>& a) {
  const int64_t n = a.n;
  parallel_for(a.rows, 4 * n, [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const T* x = a.x + a.rows_of_x.offset(row);
      T* out = a.out + row * n;
      // e: the kept features, or out itself (divided in place below), or x.
      T* written = a.features ? a.features + row * n : out;
      const T* e = x;
      if (a.elu_plus_one) {
        for (int64_t j = 0; j < n; ++j) written[j] = kernels::feature_of(x[j], true);
        e = written;
      }
      const T den = sum_in_order(e, n) + a.eps;
      a.denominator[row] = den;
      for (int64_t j = 0; j < n; ++j) out[j] = e[j] / den;
    }
  });
}

template <class T>
void backward_rows(const kernels::SumNormaliseBackward<T>& a) {
  const int64_t n = a.n;
  parallel_for(a.rows, 6 * n, [&](int64_t lo, int64_t hi) {
    std::vector<T> terms(n);
    for (int64_t row = lo; row < hi; ++row) {
      const T* g = a.grad_out + row * n;
      const T* e = a.features + row * n;
      T* gx = a.grad_x + row * n;
      const T den = a.denominator[row];
      // The division's gradient of its denominator, term by term: -((g / den) · e) / den.
      for (int64_t j = 0; j < n; ++j) terms[j] = -((g[j] / den) * e[j] / den);
      const T gs = sum_in_order(terms.data(), n);
      if (a.elu_plus_one) {
        for (int64_t j = 0; j < n; ++j) gx[j] = (g[j] / den + gs) * kernels::elu_plus_one_slope(e[j]);
      } else {
        for (int64_t j = 0; j < n; ++j) gx[j] = g[j] / den + gs;
      }
    }
  });
}

}  // namespace

void CpuBackend::sum_normalise(const Tensor& x, double eps, bool elu_plus_one, const Tensor& out,
                               const Tensor& features, const Tensor& denominator) {
  kernels::with_sum_normalise_forward(x, eps, elu_plus_one, out, features, denominator,
                                      [](const auto& a) { forward_rows(a); });
}

void CpuBackend::sum_normalise_backward(const Tensor& grad_out, const Tensor& features, const Tensor& denominator,
                                        bool elu_plus_one, const Tensor& grad_x) {
  kernels::with_sum_normalise_backward(grad_out, features, denominator, elu_plus_one, grad_x,
                                       [](const auto& a) { backward_rows(a); });
}

}  // namespace loom
