// softmax.cpp: CPU kernels of softmax, log_softmax, cross-entropy and their backwards.
//
// Every kernel works on rows along the last axis of contiguous data (the ops
// move any other axis last first). Rows are independent, so they are spread over
// threads; inside a row every loop is a plain indexed loop over contiguous memory.
//
// Numerics: each row is shifted by its maximum before exp, so nothing overflows,
// and the row sums run in double (a softmax over a large vocabulary adds many
// small terms). exp goes through Eigen's vectorised array exp: glibc's exp is
// not vectorised without -ffast-math, which loom does not use; Eigen's measured
// about 10x faster in float32 and 4x in float64 (rows of 65 to 50000).
#include "engine/cpu/eigen.h"

#include <cmath>
#include <limits>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"

namespace loom {

using cpu::parallel_for;
using cpu::sum_of;

namespace {

// Work per row element in parallel_for's units: an exp and a few passes over the row.
constexpr int64_t kRowCost = 4;

template <class T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Number of rows of length n in t (t may be empty, n may be 0).
int64_t row_count(const Tensor& t, int64_t n) { return n == 0 ? 0 : t.numel() / n; }

// A NaN in the row is skipped here but still turns the row's results into NaN
// through exp(NaN - m).
template <class T>
T row_max(const T* x, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

template <class T>
double row_sum(const T* x, int64_t n) {
  return sum_of(n, [x](int64_t i) { return static_cast<double>(x[i]); });
}

// out[i] = exp(x[i] - shift); returns the sum of out in double. out may be x.
template <class T>
double exp_shifted(const T* x, T shift, T* out, int64_t n) {
  ArrayMap<T>(out, n) = (ConstArrayMap<T>(x, n) - shift).exp();
  return row_sum(out, n);
}

template <class T>
void softmax_rows(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  parallel_for(rows, n * kRowCost, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * n;
      T* yr = y + r * n;
      const T m = row_max(xr, n);
      const double s = exp_shifted(xr, m, yr, n);  // yr holds exp(x - m) for now
      if (log) {
        // (x - m) - log s rather than x - (m + log s): exact where x is near the max.
        const T log_s = static_cast<T>(std::log(s));
        for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m) - log_s;
      } else {
        const T inv_s = static_cast<T>(1.0 / s);
        for (int64_t i = 0; i < n; ++i) yr[i] *= inv_s;
      }
    }
  });
}

// softmax:     gx = y * (g - sum(g * y))
// log_softmax: gx = g - exp(y) * sum(g)       (exp(y) is the softmax)
template <class T>
void softmax_backward_rows(const T* y, const T* g, T* gx, int64_t rows, int64_t n, bool log) {
  parallel_for(rows, n * kRowCost, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* yr = y + r * n;
      const T* gr = g + r * n;
      T* gxr = gx + r * n;
      if (log) {
        const T s = static_cast<T>(row_sum(gr, n));
        ArrayMap<T>(gxr, n) = ConstArrayMap<T>(yr, n).exp();
        for (int64_t i = 0; i < n; ++i) gxr[i] = gr[i] - gxr[i] * s;
      } else {
        const T d = static_cast<T>(sum_of(n, [&](int64_t i) { return static_cast<double>(gr[i]) * yr[i]; }));
        for (int64_t i = 0; i < n; ++i) gxr[i] = yr[i] * (gr[i] - d);
      }
    }
  });
}

// losses[r] = logsumexp(x[r]) - x[r, t[r]] = m + log(sum exp(x - m)) - x[r, t[r]].
// Targets are read through their stride `ts` (a 1-D view of a token batch is common).
template <class T>
void cross_entropy_rows(const T* x, const int64_t* t, int64_t ts, T* losses, int64_t rows, int64_t n) {
  parallel_for(rows, n * kRowCost, [&](int64_t begin, int64_t end) {
    // exp values, needed only for their sum. Aligned like every tensor row start:
    // Eigen peels unaligned leading elements onto its scalar exp, so the address
    // would otherwise change the last bits of the loss from run to run.
    std::vector<T, Eigen::aligned_allocator<T>> scratch(n);
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * n;
      const T m = row_max(xr, n);
      const double s = exp_shifted(xr, m, scratch.data(), n);
      losses[r] = static_cast<T>((static_cast<double>(m) - xr[t[r * ts]]) + std::log(s));
    }
  });
}

// gx[r] = (softmax(x[r]) - onehot(t[r])) * gl[r]; t and gl read through strides ts, gs.
template <class T>
void cross_entropy_backward_rows(const T* x, const int64_t* t, int64_t ts, const T* gl, int64_t gs, T* gx,
                                 int64_t rows, int64_t n) {
  parallel_for(rows, n * kRowCost, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * n;
      T* gxr = gx + r * n;
      const T m = row_max(xr, n);
      const double s = exp_shifted(xr, m, gxr, n);
      const T g = gl[r * gs];
      const T scale = static_cast<T>(g / s);
      for (int64_t i = 0; i < n; ++i) gxr[i] *= scale;
      gxr[t[r * ts]] -= g;
    }
  });
}

}  // namespace

void CpuBackend::softmax(const Tensor& x, const Tensor& out, bool log) {
  dispatch_float(x.dtype(), log ? "log_softmax" : "softmax", [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = x.size(-1);
    softmax_rows<T>(x.data<T>(), out.data<T>(), row_count(x, n), n, log);
  });
}

void CpuBackend::softmax_backward(const Tensor& y, const Tensor& grad_y, const Tensor& grad_x, bool log) {
  dispatch_float(y.dtype(), log ? "log_softmax_backward" : "softmax_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = y.size(-1);
    softmax_backward_rows<T>(y.data<T>(), grad_y.data<T>(), grad_x.data<T>(), row_count(y, n), n, log);
  });
}

void CpuBackend::cross_entropy(const Tensor& logits, const Tensor& targets, const Tensor& losses) {
  dispatch_float(logits.dtype(), "cross_entropy", [&](auto zero) {
    using T = decltype(zero);
    cross_entropy_rows<T>(logits.data<T>(), targets.data<int64_t>(), targets.strides()[0], losses.data<T>(),
                          logits.size(0), logits.size(1));
  });
}

void CpuBackend::cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& grad_losses,
                                        const Tensor& grad_logits) {
  dispatch_float(logits.dtype(), "cross_entropy_backward", [&](auto zero) {
    using T = decltype(zero);
    cross_entropy_backward_rows<T>(logits.data<T>(), targets.data<int64_t>(), targets.strides()[0],
                                   grad_losses.data<T>(), grad_losses.strides()[0], grad_logits.data<T>(),
                                   logits.size(0), logits.size(1));
  });
}

}  // namespace loom
