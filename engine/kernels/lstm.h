// lstm.h: the kernel spec of the fused LSTM recurrence (engine/ops.h, lstm):
// the kernels' arguments and the per-element cell math, read by both backends
// (engine/cpu/lstm.cpp, cuda/lstm.cu), so the CPU tests vouch for the very
// functions the CUDA kernels call.
//
// The recurrence, per batch row b and hidden unit j, with h_0 = c_0 = 0 and the
// gates in PyTorch's order (input i, forget f, cell g, output o):
//   a_t   = gates_x[t] + h_{t−1} W_hhᵀ                   [B, 4H]; gate q of unit j in column q·H + j
//   i, f, o = σ(a_i, a_f, a_o);  g = tanh(a_g)
//   c_t   = f ⊙ c_{t−1} + i ⊙ g;   h_t = o ⊙ tanh(c_t)
//
// Backward, in reverse time, with dh_t = grad_h[t] + dG_{t+1} W_hh (dG_{L+1} = 0)
// and dc carried from step t+1 (0 after the last step):
//   dc    = dc_{t+1→t} + dh_t ⊙ o ⊙ (1 − tanh²(c_t))
//   da_i  = dc ⊙ g ⊙ i (1 − i);   da_f = dc ⊙ c_{t−1} ⊙ f (1 − f)
//   da_g  = dc ⊙ i ⊙ (1 − g²);    da_o = dh_t ⊙ tanh(c_t) ⊙ o (1 − o)
//   dc_{t→t−1} = dc ⊙ f
// dG_t = [da_i da_f da_g da_o] is the gradient of gates_x[t], and
// dW_hh = Σ_{t≥2} dG_tᵀ h_{t−1}, one product over all steps after the sweep.
//
// What the forward keeps for the backward: the activated gates [i f g o] (so the
// backward calls no σ or tanh but one tanh(c_t)), the cell states c_t and the
// output h_t (h_{t−1} for dW_hh).
#pragma once

#include <cstdint>

#include "engine/host_device.h"
#include "engine/tensor.h"
#include "engine/vector_math.h"  // σ and tanh that loops vectorize

namespace loom {

// Forward: gates_x [L, B, 4H] and weight_hh [4H, H], contiguous. Writes h and
// cell [L, B, H] and, when defined (a backward will run), gates [L, B, 4H], the
// activated gates of every step.
struct LstmArgs {
  const Tensor& gates_x;
  const Tensor& weight_hh;
  const Tensor& h;
  const Tensor& cell;
  const Tensor& gates;
};

// Backward: grad_h [L, B, H] and what the forward kept (all contiguous).
// grad_gates_x [L, B, 4H] is overwritten; grad_weight_hh [4H, H] is overwritten
// when defined, skipped when undefined.
struct LstmBackwardArgs {
  const Tensor& grad_h;
  const Tensor& weight_hh;
  const Tensor& h;
  const Tensor& cell;
  const Tensor& gates;
  const Tensor& grad_gates_x;
  const Tensor& grad_weight_hh;
};

namespace lstm_cell {

// The sizes of one call, read off gates_x [L, B, 4H].
struct Dims {
  int64_t L = 0, B = 0, H = 0;
};
inline Dims dims_of(const Tensor& gates_x) { return {gates_x.size(0), gates_x.size(1), gates_x.size(2) / 4}; }

// Column of gate q of hidden unit j in a [*, 4H] row of pre-activations or gates.
LOOM_HD int64_t column(int64_t q, int64_t j, int64_t H) { return q * H + j; }

template <class T>
struct Gates {
  T i, f, g, o;
};

// The activated gates from the pre-activations.
template <class T>
LOOM_HD Gates<T> activate(T a_i, T a_f, T a_g, T a_o) {
  return {vmath::sigmoid(a_i), vmath::sigmoid(a_f), vmath::tanh(a_g), vmath::sigmoid(a_o)};
}

// c_t from the gates and c_{t−1}.
template <class T>
LOOM_HD T cell_state(const Gates<T>& z, T c_prev) {
  return z.f * c_prev + z.i * z.g;
}

// h_t from the output gate and c_t.
template <class T>
LOOM_HD T hidden_state(const Gates<T>& z, T c) {
  return z.o * vmath::tanh(c);
}

template <class T>
struct CellGrads {
  Gates<T> da;  // dL/d(pre-activation) of each gate
  T dc_prev;    // dL/dc_{t−1} through this step
};

// dh = dL/dh_t (from the output and from step t+1), dc = dL/dc_t from step t+1 only.
template <class T>
LOOM_HD CellGrads<T> backward(Gates<T> z, T c_prev, T c, T dh, T dc) {
  const T tc = vmath::tanh(c);
  const T dc_total = dc + dh * z.o * (T(1) - tc * tc);
  return {{dc_total * z.g * z.i * (T(1) - z.i), dc_total * c_prev * z.f * (T(1) - z.f),
           dc_total * z.i * (T(1) - z.g * z.g), dh * tc * z.o * (T(1) - z.o)},
          dc_total * z.f};
}

// One element (b, j) of step t: the gates, c_t and h_t from the four
// pre-activations and c_{t−1}.
template <class T>
struct Step {
  Gates<T> z;
  T c, h;
};
template <class T>
LOOM_HD Step<T> forward(T a_i, T a_f, T a_g, T a_o, T c_prev) {
  const Gates<T> z = activate(a_i, a_f, a_g, a_o);
  const T c = cell_state(z, c_prev);
  return {z, c, hidden_state(z, c)};
}

}  // namespace lstm_cell

}  // namespace loom
