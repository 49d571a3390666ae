// delta_lstm.cpp: CPU kernels of the Delta LSTM's recurrence; the math, layout
// and derivation are in engine/kernels/delta_lstm.h.
//
// Each sequence is one task (OpenMP over S): it walks time with its three fast
// weights R_g [D, D] in a private buffer (3·64·64 floats = 48 KiB at D = 64: they
// stay in L2 for the whole walk; small heads are walked a few side by side,
// sequences_side_by_side in engine/kernels/row_math.h). Per step and gate, R_g
// takes the delta rule's step (engine/cpu/delta_rows.h, 8 rows at a time in vector registers) with
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
  const int64_t group = cpu::sequences_side_by_side(static_cast<int64_t>(sizeof(T)) * RN);
  // Work per sequence: two passes over the three R_g per step.
  parallel_for(S, 6 * L * D * D, [&](int64_t begin, int64_t end) {
    // Per sequence of the group: R (unless it lives in the final-state slot), h_{t-1} and c_{t-1}.
    std::vector<T> scratch(R_last ? 0 : group * RN), h_all(group * D), c_all(group * D), sm(D), a(kGates * D);
    for (int64_t s0 = begin; s0 < end; s0 += group) {
      const int64_t n = std::min(group, end - s0);
      T* R_group = cpu::group_states(R_last, scratch.data(), in.R0, s0, n, RN);  // sequence s0 + j's at j·RN
      for (int64_t j = 0; j < n; ++j) {
        const int64_t s = s0 + j;
        for (int64_t i = 0; i < D; ++i) {
          h_all[j * D + i] = in.h0 ? in.h0[s * D + i] : T(0);
          c_all[j * D + i] = in.c0 ? in.c0[s * D + i] : T(0);
        }
      }
      for (int64_t t = 0; t < L; ++t) {
        if (t + 1 < L) {  // the next step's gate rows [3, D], S rows on (engine/kernels/row_math.h)
          const int64_t next = in.step(t + 1, s0);
          for (const T* m : {in.rk, in.rv, in.z}) prefetch_row(m + next * kGates * D, n * kGates * D);
          // and the rows it writes, with the intent to write (a page apart as well)
          prefetch_row_for_write(h + next * D, n * D);
          if (cell) prefetch_row_for_write(cell + next * D, n * D);
          if (vbar) prefetch_row_for_write(vbar + next * kGates * D, n * kGates * D);
        }
        for (int64_t j = 0; j < n; ++j) {
          const int64_t row = in.step(t, s0 + j);
          T* R = R_group + j * RN;
          T *cp = c_all.data() + j * D, *hp = h_all.data() + j * D, *ht = h + row * D;
          cpu::softmax_row(hp, sm.data(), D);
          for (int64_t g = 0; g < kGates; ++g) {
            const int64_t gr = row * kGates + g;  // this gate's row of [L, B, H, 3, *]
            const T* rk = in.rk + gr * D;
            const T* rv = in.rv + gr * D;
            const T* z = in.z + gr * D;
            // The delta rule's step with query s_t, then a_g = z_g + R_g,t s_t.
            T* ag = a.data() + g * D;
            forward_step(R + g * D * D, sm.data(), rk, rv, in.gamma[gr], true, ag, vbar ? vbar + gr * D : nullptr,
                         D, D);
            for (int64_t i = 0; i < D; ++i) ag[i] = z[i] + ag[i];
          }
          // The cell, element by element (branch-free: the loop vectorizes).
          const T* ap = a.data();
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
      }
      for (int64_t j = 0; j < n; ++j) {
        const int64_t s = s0 + j;
        if (h_last) std::copy(h_all.begin() + j * D, h_all.begin() + (j + 1) * D, h_last + s * D);
        if (c_last) std::copy(c_all.begin() + j * D, c_all.begin() + (j + 1) * D, c_last + s * D);
      }
    }
  });
}

template <class T>
void backward_sequences(const Operands<T>& in, const kernels::DeltaLstmSaved<T>& sv, const kernels::DeltaLstmGrads<T>& gr_out) {
  const T* g_out = sv.g_out;
  const int64_t L = in.d.L, S = in.d.S, D = in.d.D, RN = kGates * D * D;
  // R and G = dL/dR per sequence.
  const int64_t group = cpu::sequences_side_by_side(2 * static_cast<int64_t>(sizeof(T)) * RN);
  // Work per sequence: about five passes over the three R_g per step.
  parallel_for(S, 15 * L * D * D, [&](int64_t begin, int64_t end) {
    // Per sequence of the group: R, G, and dL/dh, dL/dc carried to the step before.
    std::vector<T> R(group * RN), G(group * RN), dh_all(group * D), dc_all(group * D);
    std::vector<T> sm(D), ds(D), a(kGates * D), zeros(D, T(0));
    for (int64_t s0 = begin; s0 < end; s0 += group) {
      const int64_t n = std::min(group, end - s0);
      std::memcpy(R.data(), sv.R_last + s0 * RN, sizeof(T) * n * RN);
      std::fill(G.begin(), G.end(), T(0));
      std::fill(dh_all.begin(), dh_all.end(), T(0));
      std::fill(dc_all.begin(), dc_all.end(), T(0));
      for (int64_t t = L - 1; t >= 0; --t) {
        if (t > 0) {  // the previous step's rows, read next
          const int64_t before = in.step(t - 1, s0);
          for (const T* m : {in.rk, in.rv, in.z}) prefetch_row(m + before * kGates * D, n * kGates * D);
          prefetch_row(g_out + before * D, n * D);
          for (T* m : {gr_out.z, gr_out.rk, gr_out.rv}) prefetch_row_for_write(m + before * kGates * D, n * kGates * D);
          if (t > 1) {
            prefetch_row(sv.h + in.step(t - 2, s0) * D, n * D);
            prefetch_row(sv.cell + in.step(t - 2, s0) * D, n * D);
          }
        }
        for (int64_t j = 0; j < n; ++j) {
          const int64_t s = s0 + j, row = in.step(t, s);
          T* Rj = R.data() + j * RN;
          T* Gj = G.data() + j * RN;
          T* dh_next = dh_all.data() + j * D;
          T* dc_next = dc_all.data() + j * D;
          const T* h_prev = t > 0 ? sv.h + in.step(t - 1, s) * D : in.h0 ? in.h0 + s * D : zeros.data();
          const T* c_prev = t > 0 ? sv.cell + in.step(t - 1, s) * D : in.c0 ? in.c0 + s * D : zeros.data();
          const T* c = sv.cell + row * D;
          cpu::softmax_row(h_prev, sm.data(), D);
          std::fill(ds.begin(), ds.end(), T(0));
          T* dz = gr_out.z + row * kGates * D;  // [3, D]: da_g = dz_g
          T* drk = gr_out.rk + row * kGates * D;
          std::fill(drk, drk + kGates * D, T(0));
          // The gates from R_g,t, then the cell's backward, element by element.
          dot_all_rows(Rj, sm.data(), kGates * D, D, a.data());  // R_g,t s_t for the three gates
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
            gr_out.gamma[gr] = backward_step<T, true>(Rj + g * D * D, Gj + g * D * D, sm.data(), in.rk + gr * D,
                                                      in.rv + gr * D, dz + g * D, sv.vbar + gr * D, in.gamma[gr],
                                                      ds.data(), drk + g * D, gr_out.rv + gr * D, D, D);
          }
          // Through s_t = softmax(h_{t-1}) to the previous step's h.
          const T sds = dot(sm.data(), ds.data(), D);
          for (int64_t i = 0; i < D; ++i) dh_next[i] = sm[i] * (ds[i] - sds);
        }
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
