// delta_rule.cpp: CPU kernels of the fast-weight recurrence (delta and sum
// rule); the math, layout and derivation are in engine/kernels/delta_rule.h.
//
// Each sequence is one task (OpenMP over S): it walks time with its fast weight
// W [Dv, Dk] in a private buffer (64×128 floats = 32 KB: it stays in L1/L2 for
// the whole walk) and reads q, k, v, beta one step at a time; the step itself,
// a block of rows of W at a time in vector registers, is engine/cpu/delta_rows.h.
// Each step asks for the next step's rows of q, k, v before it starts
// (prefetch_row): they lie S rows further on.
#include <algorithm>
#include <cstring>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_clock.h"
#include "engine/cpu/loops.h"
#include "engine/cpu/delta_rows.h"
#include "engine/kernels/row_math.h"

namespace loom {

using cpu::parallel_for;
using cpu::prefetch_row;
using cpu::prefetch_row_for_write;
using cpu::backward_step;
using cpu::forward_step;

namespace {

struct Dims {
  int64_t L = 0, S = 0, Dk = 0, Dv = 0;  // S = B·H sequences
};

Dims dims_of(const Tensor& q, const Tensor& v) {
  return {q.size(0), q.size(1) * q.size(2), q.size(3), v.size(3)};
}

template <class T>
void forward_sequences(const T* q, const T* k, const T* v, const T* beta, const T* w0, T* y, T* w_last, T* vbar,
                       const Dims& d) {
  const int64_t L = d.L, S = d.S, Dk = d.Dk, Dv = d.Dv;
  // Work per sequence: three passes of Dv·Dk per step.
  parallel_for(S, 3 * L * Dv * Dk, [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(w_last ? 0 : Dv * Dk);
    for (int64_t s = begin; s < end; ++s) {
      // W lives in the final-state slot when there is one: nothing to copy at the end.
      T* W = w_last ? w_last + s * Dv * Dk : scratch.data();
      if (w0) std::memcpy(W, w0 + s * Dv * Dk, sizeof(T) * Dv * Dk);
      else std::fill(W, W + Dv * Dk, T(0));
      for (int64_t t = 0; t < L; ++t) {
        const int64_t row = t * S + s;
        const T* qt = q + row * Dk;
        const T* kt = k + row * Dk;
        const T* vt = v + row * Dv;
        if (t + 1 < L) {
          prefetch_row(qt + S * Dk, Dk);
          prefetch_row(kt + S * Dk, Dk);
          prefetch_row(vt + S * Dv, Dv);
        }
        T* yt = y + row * Dv;
        T* vbt = vbar ? vbar + row * Dv : nullptr;
        const T b = beta ? beta[row] : T(1);
        forward_step(W, qt, kt, vt, b, beta != nullptr, yt, vbt, Dk, Dv);
      }
    }
  });
}

template <class T>
void backward_sequences(const T* g, const T* q, const T* k, const T* v, const T* beta, const T* vbar,
                        const T* w_last, T* gq, T* gk, T* gv, T* gbeta, const Dims& d) {
  const int64_t L = d.L, S = d.S, Dk = d.Dk, Dv = d.Dv;
  // Work per sequence: about seven passes of Dv·Dk per step.
  parallel_for(S, 7 * L * Dv * Dk, [&](int64_t begin, int64_t end) {
    std::vector<T> W(Dv * Dk), G(Dv * Dk);
    for (int64_t s = begin; s < end; ++s) {
      std::memcpy(W.data(), w_last + s * Dv * Dk, sizeof(T) * Dv * Dk);
      std::fill(G.begin(), G.end(), T(0));
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t row = t * S + s;
        const T* qt = q + row * Dk;
        const T* kt = k + row * Dk;
        const T* vt = v + row * Dv;
        const T* gt = g + row * Dv;
        if (t > 0) {
          prefetch_row(qt - S * Dk, Dk);
          prefetch_row(kt - S * Dk, Dk);
          prefetch_row(vt - S * Dv, Dv);
          prefetch_row(gt - S * Dv, Dv);
          if (beta) prefetch_row(vbar + (row - S) * Dv, Dv);
          prefetch_row_for_write(gq + (row - S) * Dk, Dk);
          prefetch_row_for_write(gk + (row - S) * Dk, Dk);
          prefetch_row_for_write(gv + (row - S) * Dv, Dv);
        }
        const T* vbt = beta ? vbar + row * Dv : nullptr;
        T* dq = gq + row * Dk;
        T* dk = gk + row * Dk;
        T* dv = gv + row * Dv;
        std::fill(dq, dq + Dk, T(0));
        std::fill(dk, dk + Dk, T(0));
        const T b = beta ? beta[row] : T(1);
        const bool reverse = t % 2 == 1;  // alternate sweeps: W and G overflow L1 (delta_rows.h)
        const T dbeta = beta ? backward_step<T, true>(W.data(), G.data(), qt, kt, vt, gt, vbt, b, dq, dk, dv, Dk, Dv, reverse)
                             : backward_step<T, false>(W.data(), G.data(), qt, kt, vt, gt, vbt, b, dq, dk, dv, Dk, Dv, reverse);
        if (beta) gbeta[row] = dbeta;
      }
    }
  });
}

}  // namespace

void CpuBackend::delta_rule(const DeltaRuleArgs& a) {
  const TimedKernel timed(KernelKind::recurrence);
  dispatch_float(a.q.dtype(), "delta_rule", [&](auto zero) {
    using T = decltype(zero);
    const Tensor qc = dense(a.q), kc = dense(a.k), vc = dense(a.v), bc = dense(a.beta), w0 = dense(a.initial_state);
    forward_sequences<T>(qc.data<T>(), kc.data<T>(), vc.data<T>(), data_or_null<const T>(bc), data_or_null<const T>(w0),
                         a.out.data<T>(), data_or_null<T>(a.final_state), data_or_null<T>(a.vbar), dims_of(a.q, a.v));
  });
}

void CpuBackend::delta_rule_backward(const DeltaRuleBackwardArgs& a) {
  const TimedKernel timed(KernelKind::recurrence);
  dispatch_float(a.q.dtype(), "delta_rule_backward", [&](auto zero) {
    using T = decltype(zero);
    const Tensor g = dense(a.grad_out), qc = dense(a.q), kc = dense(a.k), vc = dense(a.v), bc = dense(a.beta),
                 vb = dense(a.vbar), wl = dense(a.final_state);
    backward_sequences<T>(g.data<T>(), qc.data<T>(), kc.data<T>(), vc.data<T>(), data_or_null<const T>(bc),
                          data_or_null<const T>(vb), wl.data<T>(), a.grad_q.data<T>(), a.grad_k.data<T>(),
                          a.grad_v.data<T>(), data_or_null<T>(a.grad_beta), dims_of(a.q, a.v));
  });
}

}  // namespace loom
