// delta_lstm.cpp: CPU kernels of the Delta LSTM's recurrence; the math, layout
// and derivation are in engine/kernels/delta_lstm.h.
//
// Each sequence is one task (OpenMP over S): it walks time with its three fast
// weights R_g [D, D] in a private buffer (3·64·64 floats = 48 KiB at D = 64: they
// stay in L2 for the whole walk). Per step and gate, R_g takes the delta rule's
// step (engine/cpu/delta_rows.h, 8 rows at a time in vector registers) with
// s_t = softmax(h_{t-1}) as its query; the backward likewise, gate by gate, after
// the cell's pointwise backward.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_clock.h"
#include "engine/cpu/loops.h"
#include "engine/cpu/delta_rows.h"
#include "engine/kernels/delta_lstm.h"
#include "engine/kernels/row_math.h"

namespace loom {

using cpu::dot;
using cpu::parallel_for;
using cpu::prefetch_row;
using cpu::prefetch_row_for_write;
using cpu::backward_step;
using cpu::dot_all_rows;
using cpu::forward_step;
namespace delta_lstm_cell = kernels::delta_lstm_cell;

namespace {

constexpr int64_t kGates = kernels::kDeltaLstmGates;

using Dims = kernels::DeltaLstmDims;
template <class T>
using Operands = kernels::DeltaLstmInputs<T>;

template <class T>
void forward_sequences(const Operands<T>& in, const kernels::DeltaLstmOutputs<T>& out) {
  T *h = out.h, *cell = out.cell, *vbar = out.vbar, *R_last = out.R_last, *h_last = out.h_last, *c_last = out.c_last;
  const int64_t L = in.d.L, S = in.d.S, D = in.d.D, RN = kGates * D * D;
  // Work per sequence: two passes over the three R_g per step.
  parallel_for(S, 6 * L * D * D, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(R_last ? 0 : RN), h_prev(D), c_prev(D), sm(D), a(kGates * D);
    for (int64_t s = begin; s < end; ++s) {
      // R lives in the final-state slot when there is one: nothing to copy at the end.
      T* R = R_last ? R_last + s * RN : scratch.data();
      if (in.R0) std::memcpy(R, in.R0 + s * RN, sizeof(T) * RN);
      else std::fill(R, R + RN, T(0));
      for (int64_t j = 0; j < D; ++j) {
        h_prev[j] = in.h0 ? in.h0[s * D + j] : T(0);
        c_prev[j] = in.c0 ? in.c0[s * D + j] : T(0);
      }
      for (int64_t t = 0; t < L; ++t) {
        const int64_t row = in.step(t, s);
        if (t + 1 < L) {  // the next step's gate rows [3, D], S rows on (engine/kernels/row_math.h)
          const int64_t next = in.step(t + 1, s) * kGates * D;
          for (const T* m : {in.rk, in.rv, in.z}) prefetch_row(m + next, kGates * D);
          // and the rows it writes, with the intent to write (a page apart as well)
          const int64_t next_row = in.step(t + 1, s) * D;
          prefetch_row_for_write(h + next_row, D);
          if (cell) prefetch_row_for_write(cell + next_row, D);
          if (vbar) prefetch_row_for_write(vbar + next, kGates * D);
        }
        cpu::softmax_row(h_prev.data(), sm.data(), D);
        for (int64_t g = 0; g < kGates; ++g) {
          const int64_t gr = row * kGates + g;  // this gate's row of [L, B, H, 3, *]
          const T* rk = in.rk + gr * D;
          const T* rv = in.rv + gr * D;
          const T* z = in.z + gr * D;
          // The delta rule's step with query s_t, then a_g = z_g + R_g,t s_t.
          T* ag = a.data() + g * D;
          forward_step(R + g * D * D, sm.data(), rk, rv, in.gamma[gr], true, ag, vbar ? vbar + gr * D : nullptr, D, D);
          for (int64_t i = 0; i < D; ++i) ag[i] = z[i] + ag[i];
        }
        // The cell, element by element (branch-free: the loop vectorizes).
        const T* ap = a.data();
        T *cp = c_prev.data(), *hp = h_prev.data(), *ht = h + row * D;
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) {
          T c, hv;
          delta_lstm_cell::forward(ap[i], ap[D + i], ap[2 * D + i], cp[i], c, hv);
          ht[i] = hv;
          cp[i] = c;
          hp[i] = hv;
        }
        if (cell) std::copy(cp, cp + D, cell + row * D);
      }
      if (h_last) std::copy(h_prev.begin(), h_prev.end(), h_last + s * D);
      if (c_last) std::copy(c_prev.begin(), c_prev.end(), c_last + s * D);
    }
  });
}

template <class T>
void backward_sequences(const Operands<T>& in, const kernels::DeltaLstmSaved<T>& sv, const kernels::DeltaLstmGrads<T>& gr_out) {
  const T* g_out = sv.g_out;
  const int64_t L = in.d.L, S = in.d.S, D = in.d.D, RN = kGates * D * D;
  // Work per sequence: about five passes over the three R_g per step.
  parallel_for(S, 15 * L * D * D, [&](int64_t begin, int64_t end) {
    std::vector<T> R(RN), G(RN), dh_next(D), dc_next(D), sm(D), ds(D), a(kGates * D), zeros(D, T(0));
    for (int64_t s = begin; s < end; ++s) {
      std::memcpy(R.data(), sv.R_last + s * RN, sizeof(T) * RN);
      std::fill(G.begin(), G.end(), T(0));
      std::fill(dh_next.begin(), dh_next.end(), T(0));
      std::fill(dc_next.begin(), dc_next.end(), T(0));
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t row = in.step(t, s);
        const T* h_prev = t > 0 ? sv.h + in.step(t - 1, s) * D : in.h0 ? in.h0 + s * D : zeros.data();
        const T* c_prev = t > 0 ? sv.cell + in.step(t - 1, s) * D : in.c0 ? in.c0 + s * D : zeros.data();
        const T* c = sv.cell + row * D;
        if (t > 0) {  // the previous step's rows, read next
          const int64_t before = in.step(t - 1, s);
          for (const T* m : {in.rk, in.rv, in.z}) prefetch_row(m + before * kGates * D, kGates * D);
          prefetch_row(g_out + before * D, D);
          for (T* m : {gr_out.z, gr_out.rk, gr_out.rv}) prefetch_row_for_write(m + before * kGates * D, kGates * D);
          if (t > 1) {
            prefetch_row(sv.h + in.step(t - 2, s) * D, D);
            prefetch_row(sv.cell + in.step(t - 2, s) * D, D);
          }
        }
        cpu::softmax_row(h_prev, sm.data(), D);
        std::fill(ds.begin(), ds.end(), T(0));
        T* dz = gr_out.z + row * kGates * D;  // [3, D]: da_g = dz_g
        T* drk = gr_out.rk + row * kGates * D;
        std::fill(drk, drk + kGates * D, T(0));
        // The gates from R_g,t, then the cell's backward, element by element.
        dot_all_rows(R.data(), sm.data(), kGates * D, D, a.data());  // R_g,t s_t for the three gates
        const T* z = in.z + row * kGates * D;
#pragma omp simd
        for (int64_t i = 0; i < D; ++i) {
          const auto d = delta_lstm_cell::backward(z[i] + a[i], z[D + i] + a[D + i], z[2 * D + i] + a[2 * D + i],
                                                   c_prev[i], c[i], g_out[row * D + i] + dh_next[i], dc_next[i]);
          dz[i] = d.da0;
          dz[D + i] = d.da1;
          dz[2 * D + i] = d.da2;
          dc_next[i] = d.dc_prev;
        }
        // Per gate, the delta rule's reverse step with query s_t and output gradient
        // dz_g; ds collects R_g,tᵀ dz_g over the gates.
        for (int64_t g = 0; g < kGates; ++g) {
          const int64_t gr = row * kGates + g;
          gr_out.gamma[gr] = backward_step<T, true>(R.data() + g * D * D, G.data() + g * D * D, sm.data(),
                                                    in.rk + gr * D, in.rv + gr * D, dz + g * D, sv.vbar + gr * D,
                                                    in.gamma[gr], ds.data(), drk + g * D, gr_out.rv + gr * D, D, D);
        }
        // Through s_t = softmax(h_{t-1}) to the previous step's h.
        const T sds = dot(sm.data(), ds.data(), D);
        for (int64_t j = 0; j < D; ++j) dh_next[j] = sm[j] * (ds[j] - sds);
      }
    }
  });
}

}  // namespace

void CpuBackend::delta_lstm(const DeltaLstmArgs& a) {
  const TimedKernel timed(KernelKind::recurrence);
  dispatch_float(a.z.dtype(), "delta_lstm", [&](auto zero) {
    using T = decltype(zero);
    forward_sequences<T>(kernels::inputs_of<T>(a), kernels::outputs_of<T>(a));
  });
}

void CpuBackend::delta_lstm_backward(const DeltaLstmBackwardArgs& a) {
  const TimedKernel timed(KernelKind::recurrence);
  dispatch_float(a.z.dtype(), "delta_lstm_backward", [&](auto zero) {
    using T = decltype(zero);
    backward_sequences<T>(kernels::inputs_of<T>(a), kernels::saved_of<T>(a), kernels::grads_of<T>(a));
  });
}

}  // namespace loom
