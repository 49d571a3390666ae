// delta_lstm_cell.h: the pointwise part of one Delta LSTM step, forward and
// backward, shared by the kernels of both backends (engine/cpu/delta_lstm.cpp,
// cuda/delta_lstm.cu) so that the two devices compute the same expressions.
//
// Per element, with the pre-activations a_g = z_g + (R_g s)[i] of the three
// gates (input i, update u, output o):
//   i = σ(a_0), u = a_1, o = σ(a_2);  c = i u + (1 - i) c_prev;  h = o c
// The backward takes dh (from the output and from the next step's softmax) and
// dc (from the next step's cell) and returns the gradients of the three
// pre-activations and of c_prev.
#pragma once

#include "engine/elementwise_functors.h"
#include "engine/host_device.h"

namespace loom::delta_lstm_cell {

template <class T>
LOOM_HD T sigmoid(T x) {
  return fn::Sigmoid{}(x, T(0));
}

// c and h of one element.
template <class T>
LOOM_HD void forward(T a0, T a1, T a2, T c_prev, T& c, T& h) {
  const T i = sigmoid(a0), o = sigmoid(a2);
  c = i * a1 + (T(1) - i) * c_prev;
  h = o * c;
}

template <class T>
struct Grads {
  T da0, da1, da2;  // dL/da_g
  T dc_prev;        // dL/dc_{t-1} through this step
};

// dh = dL/dh_t (all paths), dc = dL/dc_t from the next step only.
template <class T>
LOOM_HD Grads<T> backward(T a0, T a1, T a2, T c_prev, T c, T dh, T dc) {
  const T i = sigmoid(a0), o = sigmoid(a2);
  const T dc_total = dh * o + dc;       // h = o c, and c feeds the next step
  const T di = dc_total * (a1 - c_prev);  // c = c_prev + i (u - c_prev)
  return {di * i * (T(1) - i), dc_total * i, dh * c * o * (T(1) - o), dc_total * (T(1) - i)};
}

}  // namespace loom::delta_lstm_cell
