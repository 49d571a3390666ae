// batcher.h: labml's shuffled loader with random-offset windows.
//
// The token stream is cut into N_items = floor((N_tokens - 1) / L) items. Each
// epoch, item i starts at s = i*L + r with r uniform in
// [0, min(L - 1, N_tokens - (i*L + L + 1))], drawn afresh; its input is
// ids[s, s+L) and its target ids[s+1, s+L+1). The items are visited in a fresh
// random permutation every epoch (without replacement) and grouped into batches
// of B, the last one smaller (drop_last = false). Batches are sequence-first:
// int64 [L, B'] input and target, column b = one item.
//
// All randomness of an epoch is a pure function of (seed, epoch), so the
// state that resumes training exactly is three integers: BatcherState.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace loom::datasets {

struct BatcherState {
  uint64_t seed = 0;
  int64_t epoch = 0;     // epochs completed
  int64_t position = 0;  // batches of this epoch already returned

  std::string to_json() const;  // {"seed":..,"epoch":..,"position":..}
  static BatcherState from_json(const std::string& json);
  bool operator==(const BatcherState&) const = default;
};

struct Batch {
  Tensor input;   // int64 [L, B']
  Tensor target;  // int64 [L, B'], input shifted by one token
};

class ShuffledBatcher {
 public:
  // Needs at least seq_len + 1 tokens (one item).
  ShuffledBatcher(std::vector<int64_t> ids, int64_t seq_len, int64_t batch_size, uint64_t seed);

  int64_t num_items() const { return num_items_; }
  int64_t batches_per_epoch() const { return (num_items_ + batch_size_ - 1) / batch_size_; }
  int64_t seq_len() const { return seq_len_; }
  int64_t batch_size() const { return batch_size_; }

  // The batch at state().position of state().epoch; then advances, moving to
  // the next epoch after the last batch.
  Batch next();
  // True when next() would start a new epoch (no batch of this epoch was returned yet).
  bool at_epoch_start() const { return state_.position == 0; }

  BatcherState state() const { return state_; }
  // Restores a state from state(); the next batches are then the ones that
  // followed it. The seed is part of the state.
  void set_state(const BatcherState& state);

  // An epoch's plan, for inspection: the order items are visited in, and the
  // start token of every item (indexed by item).
  std::vector<int64_t> item_order(int64_t epoch) const;
  std::vector<int64_t> item_starts(int64_t epoch) const;

 private:
  void plan_epoch();  // fills order_/starts_ for state_.epoch

  std::vector<int64_t> ids_;
  int64_t seq_len_, batch_size_, num_items_;
  BatcherState state_;
  int64_t planned_epoch_ = -1;
  std::vector<int64_t> order_, starts_;
};

}  // namespace loom::datasets
