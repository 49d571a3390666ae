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
//
// BatchOrder::streams (data.carry_over) instead gives every batch row one
// contiguous stream, as recurrent models carrying their state across batches
// need: the N tokens are cut into B streams of S = floor((N - 1) / B) tokens,
// stream b starting at token b·S; batch i holds tokens [b·S + i·L, b·S + i·L + L)
// of every stream b as column b (targets one further), so batch i + 1 continues
// batch i row by row. An epoch is floor((S - 1) / L) batches, all of width B; every
// epoch is the same (the seed is unused) and starts the streams over.
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

enum class BatchOrder { shuffled, streams };

class ShuffledBatcher {
 public:
  // Needs at least seq_len + 1 tokens (one item); in streams order, B streams of
  // at least seq_len + 1 tokens.
  ShuffledBatcher(std::vector<int64_t> ids, int64_t seq_len, int64_t batch_size, uint64_t seed,
                  BatchOrder order = BatchOrder::shuffled);

  int64_t num_items() const { return num_items_; }
  int64_t batches_per_epoch() const {
    return order_kind_ == BatchOrder::streams ? num_items_ : (num_items_ + batch_size_ - 1) / batch_size_;
  }
  BatchOrder order() const { return order_kind_; }
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

  Batch next_from_streams();

  std::vector<int64_t> ids_;
  int64_t seq_len_, batch_size_, num_items_;  // streams: num_items_ = batches per epoch
  BatchOrder order_kind_;
  int64_t stream_length_ = 0;  // S, streams only
  BatcherState state_;
  int64_t planned_epoch_ = -1;
  std::vector<int64_t> order_, starts_;
};

}  // namespace loom::datasets
