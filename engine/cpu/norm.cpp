// norm.cpp: CPU kernels of layer_norm and its backward.
//
// x is contiguous, viewed as [rows, D]; each row is normalised on its own (the
// formulas are in engine/kernels/norm.h). Row statistics are accumulated in
// double, and the variance takes a second pass over the (cached) row instead of
// E[x^2] - E[x]^2, which cancels badly in float32 when the mean is large against
// the spread.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"
#include "engine/kernels/norm.h"

namespace loom {

using cpu::parallel_for;
using cpu::sum_of;

namespace {

// The output loop, compiled once per affine variant so that the inner loop has
// no branches. The mean comes as a head and a tail, mean = hi + lo: x - hi is
// exact where x is near the mean, so (x - hi) - lo keeps the precision that a
// mean rounded to T would lose when the mean is large against the spread.
template <class T, bool kWeight, bool kBias>
void normalize_row(const T* x, const T* w, const T* b, T mean_hi, T mean_lo, T rstd, T* y, int64_t D) {
  for (int64_t i = 0; i < D; ++i) {
    T v = ((x[i] - mean_hi) - mean_lo) * rstd;
    if constexpr (kWeight) v *= w[i];
    if constexpr (kBias) v += b[i];
    y[i] = v;
  }
}

template <class T, bool kWeight, bool kBias>
void layer_norm_rows(const T* x, const T* w, const T* b, double eps, T* y, T* mean, T* rstd, int64_t rows,
                     int64_t D) {
  parallel_for(rows, D * 3, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * D;
      const double mu = sum_of(D, [&](int64_t i) { return static_cast<double>(xr[i]); }) / D;
      const double ss = sum_of(D, [&](int64_t i) {
        const double d = xr[i] - mu;
        return d * d;
      });
      const double rs = 1.0 / std::sqrt(ss / D + eps);
      const T mu_hi = static_cast<T>(mu);
      mean[r] = mu_hi;
      rstd[r] = static_cast<T>(rs);
      normalize_row<T, kWeight, kBias>(xr, w, b, mu_hi, static_cast<T>(mu - mu_hi), rstd[r], y + r * D, D);
    }
  });
}

// The backward of one row, with gxhat = g * weight:
//   grad_x = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))
// and this row's terms of grad_weight (g * xhat) and grad_bias (g) added to the
// caller's partial sums pw, pb (either may be null). xhat is recomputed from the
// saved mean, which is rounded to T (the forward's head-and-tail trick has no
// tail to save): in float32 slightly less exact than the forward for rows whose
// mean is large against their spread, which is fine for a gradient.
template <class T, bool kWeight>
void layer_norm_backward_row(const T* g, const T* x, const T* w, T mean, T rstd, T* gx, double* pw, double* pb,
                             int64_t D) {
  if (gx) {
    // gx holds gxhat between the two passes. Reading it back rounded (rather than
    // recomputing g * w, which the compiler may fuse into the subtraction) makes
    // gxhat - mean(gxhat) exactly 0 where it should be, as for D = 1.
    for (int64_t i = 0; i < D; ++i) gx[i] = kWeight ? g[i] * w[i] : g[i];
    const double sum_gxhat = sum_of(D, [&](int64_t i) { return static_cast<double>(gx[i]); });
    const double sum_gxhat_xhat =
        sum_of(D, [&](int64_t i) { return static_cast<double>(gx[i]) * ((x[i] - mean) * rstd); });
    const T a = static_cast<T>(sum_gxhat / D), c = static_cast<T>(sum_gxhat_xhat / D);
    for (int64_t i = 0; i < D; ++i) {
      const T xhat = (x[i] - mean) * rstd;
      gx[i] = rstd * (gx[i] - a - xhat * c);
    }
  }
  if (pw && pb) {  // the common case in training, in one pass
    for (int64_t i = 0; i < D; ++i) {
      const double gi = g[i];
      pw[i] += gi * ((x[i] - mean) * rstd);
      pb[i] += gi;
    }
  } else if (pw) {
    for (int64_t i = 0; i < D; ++i) pw[i] += static_cast<double>(g[i]) * ((x[i] - mean) * rstd);
  } else if (pb) {
    for (int64_t i = 0; i < D; ++i) pb[i] += g[i];
  }
}

// At most this many blocks of rows, each with its own partial sums of grad_weight
// and grad_bias: enough to keep every core busy, few enough that the partial
// buffers stay small and their final reduction is cheap.
constexpr int64_t kMaxBlocks = 64;

template <class T, bool kWeight>
void layer_norm_backward_rows(const T* g, const T* x, const T* w, const T* mean, const T* rstd, T* gx, T* gw,
                              T* gb, int64_t rows, int64_t D) {
  // Rows are cut into blocks independently of the thread count, and each block
  // sums into its own buffer: no two threads write the same memory, and the
  // result is the same whatever the number of threads.
  const int64_t min_rows = (cpu::kParallelGrain + D - 1) / std::max<int64_t>(D, 1);
  const int64_t block_rows = std::max<int64_t>({1, min_rows, (rows + kMaxBlocks - 1) / kMaxBlocks});
  const int64_t blocks = (rows + block_rows - 1) / block_rows;
  std::vector<double> partial_w(gw ? blocks * D : 0, 0.0), partial_b(gb ? blocks * D : 0, 0.0);
  parallel_for(blocks, block_rows * D * 4, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      double* pw = gw ? partial_w.data() + k * D : nullptr;
      double* pb = gb ? partial_b.data() + k * D : nullptr;
      const int64_t r_end = std::min(rows, (k + 1) * block_rows);
      for (int64_t r = k * block_rows; r < r_end; ++r)
        layer_norm_backward_row<T, kWeight>(g + r * D, x + r * D, w, mean[r], rstd[r], gx ? gx + r * D : nullptr,
                                            pw, pb, D);
    }
  });
  // Add the blocks' partial sums up, in block order.
  auto reduce = [&](const std::vector<double>& partial, T* out) {
    parallel_for(D, blocks, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        double s = 0.0;
        for (int64_t k = 0; k < blocks; ++k) s += partial[k * D + i];
        out[i] = static_cast<T>(s);
      }
    });
  };
  if (gw) reduce(partial_w, gw);
  if (gb) reduce(partial_b, gb);
}

}  // namespace

void CpuBackend::layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, const Tensor& out,
                            const Tensor& mean, const Tensor& rstd) {
  kernels::with_layer_norm_forward(x, weight, bias, eps, out, mean, rstd, [](const auto& a) {
    using T = typename std::decay_t<decltype(a)>::Value;
    auto run = [&](auto kernel) { kernel(a.x, a.weight, a.bias, a.eps, a.out, a.mean, a.rstd, a.rows, a.D); };
    if (a.weight && a.bias) run(layer_norm_rows<T, true, true>);
    else if (a.weight) run(layer_norm_rows<T, true, false>);
    else if (a.bias) run(layer_norm_rows<T, false, true>);
    else run(layer_norm_rows<T, false, false>);
  });
}

void CpuBackend::layer_norm_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight,
                                     const Tensor& mean, const Tensor& rstd, const Tensor& grad_x,
                                     const Tensor& grad_weight, const Tensor& grad_bias) {
  kernels::with_layer_norm_backward(grad_out, x, weight, mean, rstd, grad_x, grad_weight, grad_bias, [](const auto& a) {
    using T = typename std::decay_t<decltype(a)>::Value;
    auto run = [&](auto kernel) {
      kernel(a.grad_out, a.x, a.weight, a.mean, a.rstd, a.grad_x, a.grad_weight, a.grad_bias, a.rows, a.D);
    };
    if (a.weight) run(layer_norm_backward_rows<T, true>);
    else run(layer_norm_backward_rows<T, false>);
  });
}

}  // namespace loom
