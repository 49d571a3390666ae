// delta_rnn.cpp: CPU kernels of the Delta RNN's recurrence; the math, layout and
// derivation are in engine/kernels/delta_rnn.h.
//
// Each sequence is one task (OpenMP over S): it walks time with its recurrent
// fast weight R [D, D] in a private buffer (64×64 floats = 16 KB: it stays in
// L1/L2 for the whole walk); small heads are walked a few side by side
// (sequences_side_by_side, engine/kernels/row_math.h). A step is the delta rule's (engine/cpu/delta_rows.h,
// blocks of 8 rows in vector registers) with s_t = softmax(y_{t-1}) as its query.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_clock.h"
#include "engine/cpu/loops.h"
#include "engine/cpu/delta_rows.h"
#include "engine/kernels/delta_rnn.h"
#include "engine/kernels/row_math.h"

namespace loom {

using cpu::dot;
using cpu::parallel_for;
using cpu::prefetch_row;
using cpu::prefetch_row_for_write;
using cpu::backward_step;
using cpu::forward_step;

namespace {

struct Dims {
  int64_t L = 0, S = 0, D = 0;  // S = B·H sequences
};

Dims dims_of(const Tensor& z) { return {z.size(0), z.size(1) * z.size(2), z.size(3)}; }

// s = softmax(y) over n entries, max-subtracted; y == nullptr means y = 0 (s uniform).
template <class T>
void softmax_of(const T* y, T* s, int64_t n) {
  if (y) cpu::softmax_row(y, s, n);
  else std::fill(s, s + n, T(1) / static_cast<T>(n));
}

// y_{t-1} of sequence s at step t: the previous output row, initial_y, or null (zeros).
template <class T>
const T* previous_y(const T* y, const T* y0, int64_t t, int64_t s, const Dims& d) {
  if (t > 0) return y + ((t - 1) * d.S + s) * d.D;
  return y0 ? y0 + s * d.D : nullptr;
}

template <class T>
void forward_sequences(const T* z, const T* rk, const T* rv, const T* gamma, const T* r0, const T* y0, T* y,
                       T* r_last, T* vbar, const Dims& d) {
  const int64_t L = d.L, S = d.S, D = d.D;
  const int64_t group = cpu::sequences_side_by_side(static_cast<int64_t>(sizeof(T)) * D * D);
  // Work per sequence: three passes of D·D per step.
  parallel_for(S, 3 * L * D * D, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(r_last ? 0 : group * D * D), soft(D);
    for (int64_t s0 = begin; s0 < end; s0 += group) {
      const int64_t n = std::min(group, end - s0);
      T* R = cpu::group_states(r_last, scratch.data(), r0, s0, n, D * D);  // sequence s0 + j's at j·D·D
      for (int64_t t = 0; t < L; ++t) {
        const int64_t first = t * S + s0;  // the group's rows of step t
        if (t + 1 < L) {  // the next step's rows, S rows on (engine/kernels/row_math.h)
          prefetch_row(rk + (first + S) * D, n * D);
          prefetch_row(rv + (first + S) * D, n * D);
          prefetch_row(z + (first + S) * D, n * D);
          prefetch_row_for_write(y + (first + S) * D, n * D);
          if (vbar) prefetch_row_for_write(vbar + (first + S) * D, n * D);
        }
        for (int64_t j = 0; j < n; ++j) {
          const int64_t row = first + j;
          const T* zt = z + row * D;
          T* yt = y + row * D;
          softmax_of(previous_y(y, y0, t, s0 + j, d), soft.data(), D);
          // The delta rule's step with query s_t = softmax(y_{t-1}), then y_t = z_t + R_t s_t.
          forward_step(R + j * D * D, soft.data(), rk + row * D, rv + row * D, gamma[row], true, yt,
                       vbar ? vbar + row * D : nullptr, D, D);
          for (int64_t i = 0; i < D; ++i) yt[i] = zt[i] + yt[i];
        }
      }
    }
  });
}

template <class T>
void backward_sequences(const T* grad, const T* rk, const T* rv, const T* gamma, const T* y0, const T* y,
                        const T* vbar, const T* r_last, T* gz, T* grk, T* grv, T* ggamma, const Dims& d) {
  const int64_t L = d.L, S = d.S, D = d.D;
  // R and G = dL/dR per sequence.
  const int64_t group = cpu::sequences_side_by_side(2 * static_cast<int64_t>(sizeof(T)) * D * D);
  // Work per sequence: about seven passes of D·D per step.
  parallel_for(S, 7 * L * D * D, [&](int64_t begin, int64_t end) {
    // Per sequence of the group: R, G, and gy = dL/dy_{t-1} carried to the step before.
    std::vector<T> R(group * D * D), G(group * D * D), gy(group * D), soft(D), ds(D);
    for (int64_t s0 = begin; s0 < end; s0 += group) {
      const int64_t n = std::min(group, end - s0);
      std::memcpy(R.data(), r_last + s0 * D * D, sizeof(T) * n * D * D);
      std::fill(G.begin(), G.end(), T(0));
      std::fill(gy.begin(), gy.end(), T(0));
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t first = t * S + s0;  // the group's rows of step t
        if (t > 0) {  // the previous step's rows, read next
          const int64_t before = first - S;
          prefetch_row(rk + before * D, n * D);
          prefetch_row(rv + before * D, n * D);
          prefetch_row(vbar + before * D, n * D);
          prefetch_row(grad + before * D, n * D);
          if (t > 1) prefetch_row(y + (before - S) * D, n * D);
          prefetch_row_for_write(gz + before * D, n * D);
          prefetch_row_for_write(grk + before * D, n * D);
          prefetch_row_for_write(grv + before * D, n * D);
        }
        for (int64_t j = 0; j < n; ++j) {
          const int64_t row = first + j;
          const T* gt = grad + row * D;
          T* gyj = gy.data() + j * D;
          T* dz = gz + row * D;
          T* dk = grk + row * D;
          softmax_of(previous_y(y, y0, t, s0 + j, d), soft.data(), D);
          for (int64_t i = 0; i < D; ++i) dz[i] = gt[i] + gyj[i];
          std::fill(ds.begin(), ds.end(), T(0));
          std::fill(dk, dk + D, T(0));
          // The delta rule's reverse step with query s_t and output gradient dz: ds
          // collects R_tᵀ dz (the query's gradient).
          ggamma[row] = backward_step<T, true>(R.data() + j * D * D, G.data() + j * D * D, soft.data(), rk + row * D,
                                               rv + row * D, dz, vbar + row * D, gamma[row], ds.data(), dk,
                                               grv + row * D, D, D);
          // dL/dy_{t-1} through s_t = softmax(y_{t-1}).
          const T sds = dot(soft.data(), ds.data(), D);
          for (int64_t i = 0; i < D; ++i) gyj[i] = soft[i] * (ds[i] - sds);
        }
      }
    }
  });
}

}  // namespace

void CpuBackend::delta_rnn(const DeltaRnnArgs& a) {
  const TimedKernel timed(KernelKind::recurrence);
  dispatch_float(a.z.dtype(), "delta_rnn", [&](auto zero) {
    using T = decltype(zero);
    const Tensor zc = dense(a.z), kc = dense(a.rk), vc = dense(a.rv), gc = dense(a.gamma), r0 = dense(a.initial_R),
                 y0 = dense(a.initial_y);
    forward_sequences<T>(zc.data<T>(), kc.data<T>(), vc.data<T>(), gc.data<T>(), data_or_null<const T>(r0),
                         data_or_null<const T>(y0), a.out.data<T>(), data_or_null<T>(a.final_R),
                         data_or_null<T>(a.vbar), dims_of(a.z));
  });
}

void CpuBackend::delta_rnn_backward(const DeltaRnnBackwardArgs& a) {
  const TimedKernel timed(KernelKind::recurrence);
  dispatch_float(a.rk.dtype(), "delta_rnn_backward", [&](auto zero) {
    using T = decltype(zero);
    const Tensor g = dense(a.grad_out), kc = dense(a.rk), vc = dense(a.rv), gc = dense(a.gamma),
                 y0 = dense(a.initial_y), yc = dense(a.out), vb = dense(a.vbar), rl = dense(a.final_R);
    backward_sequences<T>(g.data<T>(), kc.data<T>(), vc.data<T>(), gc.data<T>(), data_or_null<const T>(y0),
                          yc.data<T>(), vb.data<T>(), rl.data<T>(), a.grad_z.data<T>(), a.grad_rk.data<T>(),
                          a.grad_rv.data<T>(), a.grad_gamma.data<T>(), dims_of(a.rk));
  });
}

}  // namespace loom
