// family_test_utils.h: helpers the model-family tests share (test_transformer,
// test_fast_weights, test_feedback, and test_cuda's whole-model cases).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "engine/ops.h"
#include "models/families/language_model.h"
#include "models/blocks/optim.h"

namespace loom::test {

// Token ids uniform in [0, vocab), int64 [L, B], the same for the same seed.
inline Tensor random_tokens(int64_t L, int64_t B, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> ids(L * B);
  for (auto& id : ids) id = static_cast<int64_t>(rng() % vocab);
  return Tensor::from_vector(ids, {L, B});
}

// Mean cross-entropy of logits [L, B, V] against targets [L, B].
inline Tensor next_token_loss(const Tensor& logits, const Tensor& targets) {
  const int64_t V = logits.size(-1);
  return cross_entropy(reshape(logits, {-1, V}), reshape(targets, {-1}));
}

// Trains `model` on one batch with Adam (models/blocks/optim.h, checked against PyTorch
// in test_optim.cpp) at a constant learning rate; returns the first loss and the
// lowest of the last quarter of the steps. A model that can learn drives that one
// close to zero. Not the very last loss: at a constant rate of 1e-2 Adam can throw
// a model that has learned the batch off it for a few steps, and where that lands
// depends on the float32 rounding of the machine's GEMM (the fast-weights model on
// OpenBLAS's SkylakeX kernels went from 0.0013 at step 141 to 0.24 at step 146 and
// ended at 0.089; on Eigen's kernels it ended at 0.0006).
inline std::pair<double, double> overfit_one_batch(models::LanguageModel& model, const Tensor& tokens,
                                                   const Tensor& targets, int steps, double lr,
                                                   models::AdamForm form) {
  models::AdamOptions options;
  options.form = form;
  models::Adam adam(model.named_parameters(), options, models::LrSchedule::constant(lr));
  double first = 0.0, lowest_late = std::numeric_limits<double>::infinity();
  for (int step = 0; step < steps; ++step) {
    const Tensor loss = next_token_loss(model.forward(tokens), targets);
    const double value = loss.item();
    if (step == 0) first = value;
    if (4 * step >= 3 * steps) lowest_late = std::min(lowest_late, value);
    loss.backward();
    adam.step();
    adam.zero_grad();
  }
  return {first, lowest_late};
}

}  // namespace loom::test
