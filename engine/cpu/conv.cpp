// conv.cpp: CPU kernels of the depth-wise causal 1-D convolution.
//
// x [L, ..., C] is walked as L*B rows of C channels (B = the product of the
// middle dims), row r = t*B + b, so the input that tap k reads for row r lies
// (K-1-k)*B rows earlier. Each row of the output, and of grad_x, depends on K
// rows of its input only: rows are independent tasks, vectorised over the
// channels. Both kernels first lay the weight out as taps[k][c] (a shared [1, K]
// kernel repeated over the channels) so the inner loops read it with unit stride.
//
// The backward is one pass over the rows for all three gradients. grad_weight and
// grad_bias sum over every row: the rows are cut into chunks whose size depends
// on the shape only, each chunk sums into its own buffer (in double, like the sum
// reduction) and the buffers are added in chunk order: no races, and the same
// result for any thread count.
#include <algorithm>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/loops.h"
#include "engine/kernels/conv.h"

namespace loom {

using cpu::parallel_for;

namespace {

// weight [Cw, K] as taps[k * C + c].
template <class T>
std::vector<T> taps_of(const T* w, const ConvDims& d) {
  std::vector<T> taps(d.K * d.C);
  for (int64_t k = 0; k < d.K; ++k)
    for (int64_t c = 0; c < d.C; ++c) taps[k * d.C + c] = w[(d.shared ? 0 : c) * d.K + k];
  return taps;
}

template <class T>
void conv_forward(const T* x, const T* w, const T* bias, T* out, const ConvDims& d) {
  const int64_t C = d.C, K = d.K, B = d.B;
  const std::vector<T> taps = taps_of(w, d);
  std::vector<T> b0(C, T(0));
  if (bias)
    for (int64_t c = 0; c < C; ++c) b0[c] = bias[d.shared ? 0 : c];
  parallel_for(d.L * B, C * K, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t t = r / B;
      T* o = out + r * C;
      for (int64_t c = 0; c < C; ++c) o[c] = b0[c];
      // Tap k reads time t-(K-1)+k; taps before time 0 read zeros and are skipped.
      for (int64_t k = std::max<int64_t>(0, K - 1 - t); k < K; ++k) {
        const T* xs = x + (r - (K - 1 - k) * B) * C;
        const T* wk = taps.data() + k * C;
        for (int64_t c = 0; c < C; ++c) o[c] += wk[c] * xs[c];
      }
    }
  });
}

// One pass over the rows computes all three gradients (each may be null):
//   grad_x[s]       = sum_k taps[k] * g[s + K-1-k]   (terms past the end are zero),
//   grad_weight[c,k] = sum over rows of g[t] * x[t-(K-1)+k],
//   grad_bias[c]     = sum over rows of g[t],
// the last two also summed over c for a shared kernel.
template <class T>
void conv_backward(const T* g, const T* x, const T* w, T* gx, T* gw, T* gb, const ConvDims& d) {
  const int64_t C = d.C, K = d.K, B = d.B, L = d.L, rows = L * B;
  const std::vector<T> taps = taps_of(w, d);
  const bool params = gw || gb;
  // At most 64 chunks (the buffers stay O(C), not O(rows)), each with enough
  // work to be worth a task.
  constexpr int64_t kMaxChunks = 64, kMinChunkElements = 4096;
  const int64_t chunk_rows = std::max<int64_t>(
      {int64_t{1}, (rows + kMaxChunks - 1) / kMaxChunks, kMinChunkElements / std::max<int64_t>(C, 1)});
  const int64_t chunks = (rows + chunk_rows - 1) / chunk_rows;
  const int64_t stride = (K + 1) * C;  // a chunk's sums: [K, C] for the weight, then [C] for the bias
  std::vector<double> partial(params ? chunks * stride : 0, 0.0);
  parallel_for(chunks, chunk_rows * C * K, [&](int64_t lo, int64_t hi) {
    for (int64_t ch = lo; ch < hi; ++ch) {
      double* pw = params ? partial.data() + ch * stride : nullptr;
      double* pb = params ? pw + K * C : nullptr;
      const int64_t end = std::min(rows, (ch + 1) * chunk_rows);
      for (int64_t r = ch * chunk_rows; r < end; ++r) {
        const int64_t t = r / B;
        const T* gr = g + r * C;
        if (gx) {
          T* o = gx + r * C;
          std::fill(o, o + C, T(0));
          for (int64_t k = std::max<int64_t>(0, t + K - L); k < K; ++k) {
            const T* gs = g + (r + (K - 1 - k) * B) * C;
            const T* wk = taps.data() + k * C;
            for (int64_t c = 0; c < C; ++c) o[c] += wk[c] * gs[c];
          }
        }
        if (gb)
          for (int64_t c = 0; c < C; ++c) pb[c] += gr[c];
        if (gw) {
          for (int64_t k = std::max<int64_t>(0, K - 1 - t); k < K; ++k) {
            const T* xs = x + (r - (K - 1 - k) * B) * C;
            double* acc = pw + k * C;
            for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<double>(gr[c]) * xs[c];
          }
        }
      }
    }
  });
  if (!params) return;
  std::vector<double> total(stride, 0.0);
  for (int64_t ch = 0; ch < chunks; ++ch)
    for (int64_t i = 0; i < stride; ++i) total[i] += partial[ch * stride + i];
  // Per-channel sums -> [Cw, K] and [Cw].
  auto channel_sum = [&](int64_t row) {
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) s += total[row * C + c];
    return s;
  };
  if (gw) {
    for (int64_t k = 0; k < K; ++k) {
      if (d.shared) gw[k] = static_cast<T>(channel_sum(k));
      else
        for (int64_t c = 0; c < C; ++c) gw[c * K + k] = static_cast<T>(total[k * C + c]);
    }
  }
  if (gb) {
    if (d.shared) gb[0] = static_cast<T>(channel_sum(K));
    else
      for (int64_t c = 0; c < C; ++c) gb[c] = static_cast<T>(total[K * C + c]);
  }
}

}  // namespace

void CpuBackend::causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out) {
  kernels::with_conv_forward(x, weight, bias, out, [](const auto& a) {
    conv_forward(a.x, a.weight, a.bias, a.out, a.d);
  });
}

void CpuBackend::causal_conv1d_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight,
                                        const Tensor& grad_x, const Tensor& grad_weight, const Tensor& grad_bias) {
  kernels::with_conv_backward(grad_out, x, weight, grad_x, grad_weight, grad_bias, [](const auto& a) {
    conv_backward(a.grad_out, a.x, a.weight, a.grad_x, a.grad_weight, a.grad_bias, a.d);
  });
}

}  // namespace loom
