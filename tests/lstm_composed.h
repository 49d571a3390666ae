// lstm_composed.h: the LSTM recurrence as models/families/sequence_classifier.cpp composed
// it before the fused op lstm (engine/ops.h): per step a matmul for the recurrent
// half, narrow for each gate, sigmoid and tanh, and the cell update, every one a
// recorded op. The yardstick of tests/cases_lstm.cpp and tests/bench_lstm.cpp.
#pragma once

#include <vector>

#include "engine/ops.h"

namespace loom::test {

// Per step: gates_steps[t] [B, 4H] (the input half of step t's gates), weight_hh
// [4H, H] -> h_t [B, H], h_0 = c_0 = 0. The steps stay separate tensors, as the
// layer kept them: slicing step t out of one recorded [L, B, 4H] tensor would cost
// a full-size gradient per step in the backward.
inline std::vector<Tensor> lstm_composed_steps(const std::vector<Tensor>& gates_steps, const Tensor& weight_hh) {
  const int64_t H = weight_hh.size(1);
  const Tensor recurrent_weight = transpose(weight_hh, 0, 1);  // [H, 4H]
  std::vector<Tensor> outputs;
  Tensor h, c;
  for (size_t t = 0; t < gates_steps.size(); ++t) {
    Tensor gates = gates_steps[t];
    if (t > 0) gates = gates + matmul(h, recurrent_weight);  // h_0 = 0 adds nothing
    const Tensor i = sigmoid(narrow(gates, 1, 0, H));
    const Tensor f = sigmoid(narrow(gates, 1, H, H));
    const Tensor g = tanh(narrow(gates, 1, 2 * H, H));
    const Tensor o = sigmoid(narrow(gates, 1, 3 * H, H));
    c = t > 0 ? f * c + i * g : i * g;  // c_0 = 0
    h = o * tanh(c);
    outputs.push_back(h);
  }
  return outputs;
}

// gates_x [L, B, 4H], weight_hh [4H, H] -> h [L, B, H] (slices gates_x: for short L).
inline Tensor lstm_composed(const Tensor& gates_x, const Tensor& weight_hh) {
  std::vector<Tensor> steps;
  for (int64_t t = 0; t < gates_x.size(0); ++t) steps.push_back(squeeze(narrow(gates_x, 0, t, 1), 0));
  return stack(lstm_composed_steps(steps, weight_hh), 0);
}

}  // namespace loom::test
