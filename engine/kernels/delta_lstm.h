// delta_lstm.h: the kernel spec of the Delta LSTM's recurrence (engine/ops.h),
// read by both backends (engine/cpu/delta_lstm.cpp, cuda/delta_lstm.cu).
#pragma once

#include <cstdint>

#include "engine/host_device.h"
#include "engine/kernels/layout.h"

namespace loom::kernels {

// Three gates per step: input i, update u, output o.
constexpr int64_t kDeltaLstmGates = 3;

// The CUDA forward's shared memory, in elements, one block per sequence: the
// three fast weights, h_{t-1}, c_{t-1}, s = softmax(h_{t-1}), and this step's
// rows of z, rk, rv and the pre-activations a.
struct DeltaLstmForwardShared {
  Region R;            // [3, D, D]
  Region h, c, s;      // [D]
  Region z, rk, rv, a; // [3, D]
  int64_t total = 0;

  LOOM_HD explicit DeltaLstmForwardShared(int64_t D) {
    const int64_t GD = kDeltaLstmGates * D;
    Carver m;
    R = m.take(GD * D);
    h = m.take(D);
    c = m.take(D);
    s = m.take(D);
    z = m.take(GD);
    rk = m.take(GD);
    rv = m.take(GD);
    a = m.take(GD);
    total = m.end;
  }
};

// The CUDA backward's shared memory, in elements: R and G = dL/dR; the rows of
// D (h_{t-1}, c_{t-1}, c_t, ĝ = grad_out_t, s, dh_next, dc_next); the rows of
// 3·D (z, rk, rv, vbar, a then da, δ, c_i = dL/dvbar, the dgamma terms, ds per gate).
struct DeltaLstmBackwardShared {
  Region R, G;                                          // [3, D, D]
  Region h_prev, c_prev, c, g_out, s, dh_next, dc_next; // [D]
  Region z, rk, rv, vbar, a, delta, dvbar, dgamma, ds;  // [3, D]
  int64_t total = 0;

  LOOM_HD explicit DeltaLstmBackwardShared(int64_t D) {
    const int64_t GD = kDeltaLstmGates * D;
    Carver m;
    R = m.take(GD * D);
    G = m.take(GD * D);
    h_prev = m.take(D);
    c_prev = m.take(D);
    c = m.take(D);
    g_out = m.take(D);
    s = m.take(D);
    dh_next = m.take(D);
    dc_next = m.take(D);
    z = m.take(GD);
    rk = m.take(GD);
    rv = m.take(GD);
    vbar = m.take(GD);
    a = m.take(GD);
    delta = m.take(GD);
    dvbar = m.take(GD);
    dgamma = m.take(GD);
    ds = m.take(GD);
    total = m.end;
  }
};

}  // namespace loom::kernels
