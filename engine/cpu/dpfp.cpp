// dpfp.cpp: CPU kernels of the DPFP feature map; the formulas are in
// engine/kernels/dpfp.h.
//
// x [rows, n] is walked row by row; rows are independent tasks. Each row first
// lays out r = relu([x, -x]) twice over in a buffer of 4n entries, r2[k] =
// r[k mod 2n], so every cyclic read r[(j ± i) mod 2n] is a plain offset into it
// and the inner loops run over j with unit stride and no wrap-around test
// (they vectorise).
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"
#include "engine/kernels/dpfp.h"

namespace loom {

using cpu::parallel_for;

namespace {

// r2[k] = r[k mod 2n] for k < 4n, r = relu([x, -x]), x the row's n entries.
template <class T>
void fill_doubled_r(const T* x, int64_t n, T* r2) {
  for (int64_t c = 0; c < n; ++c) {
    r2[c] = r2[2 * n + c] = kernels::relu_pair_at(x, n, c);          // relu(x)
    r2[n + c] = r2[3 * n + c] = kernels::relu_pair_at(x, n, n + c);  // relu(-x)
  }
}

template <class T>
void forward_rows(const T* x, T* out, int64_t rows, int64_t n, int64_t nu) {
  const int64_t m = 2 * n;  // entries of r and of each block
  parallel_for(rows, m * nu, [&](int64_t lo, int64_t hi) {
    std::vector<T> r2(2 * m);
    for (int64_t row = lo; row < hi; ++row) {
      fill_doubled_r(x + row * n, n, r2.data());
      T* o = out + row * m * nu;
      for (int64_t i = 1; i <= nu; ++i, o += m) {
        const T* rolled = r2.data() + m - i;  // rolled[j] = r[(j - i) mod 2n]
        for (int64_t j = 0; j < m; ++j) o[j] = r2[j] * rolled[j];
      }
    }
  });
}

template <class T>
void backward_rows(const T* g, const T* x, T* gx, int64_t rows, int64_t n, int64_t nu) {
  const int64_t m = 2 * n;
  parallel_for(rows, 2 * m * nu, [&](int64_t lo, int64_t hi) {
    std::vector<T> r2(2 * m), dr(m);
    for (int64_t row = lo; row < hi; ++row) {
      const T* xr = x + row * n;
      fill_doubled_r(xr, n, r2.data());
      std::fill(dr.begin(), dr.end(), T(0));
      const T* gi = g + row * m * nu;
      for (int64_t i = 1; i <= nu; ++i, gi += m) {
        const T* r_back = r2.data() + m - i;  // r_back[j] = r[(j - i) mod 2n]
        const T* r_ahead = r2.data() + i;     // r_ahead[j] = r[(j + i) mod 2n]
        // g[i][(j + i) mod 2n]: gi + i for j < 2n - i, then it wraps to gi + i - 2n.
        const int64_t split = m - i;
        for (int64_t j = 0; j < split; ++j) dr[j] = dr[j] + gi[j] * r_back[j] + gi[j + i] * r_ahead[j];
        for (int64_t j = split; j < m; ++j) dr[j] = dr[j] + gi[j] * r_back[j] + gi[j - split] * r_ahead[j];
      }
      T* gxr = gx + row * n;
      for (int64_t c = 0; c < n; ++c)
        gxr[c] = (xr[c] > T(0) ? dr[c] : T(0)) - (xr[c] < T(0) ? dr[n + c] : T(0));
    }
  });
}

}  // namespace

void CpuBackend::dpfp(const Tensor& x, int64_t nu, const Tensor& out) {
  kernels::with_dpfp_forward(x, nu, out, [](const auto& a) { forward_rows(a.x, a.out, a.rows, a.n, a.nu); });
}

void CpuBackend::dpfp_backward(const Tensor& grad_out, const Tensor& x, int64_t nu, const Tensor& grad_x) {
  kernels::with_dpfp_backward(grad_out, x, nu, grad_x, [](const auto& a) {
    backward_rows(a.grad_out, a.x, a.grad_x, a.rows, a.n, a.nu);
  });
}

}  // namespace loom
