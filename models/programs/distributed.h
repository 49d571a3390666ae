// distributed.h: data-parallel training, one rank of a comm::Communicator each.
//
// Every rank holds the whole model and draws the same shuffled batches (the
// batcher's seed is the config's); rank r trains on its slice of every batch's
// columns (batch_slice), so N ranks together see exactly the tokens one process
// would. After the backward, all_reduce_gradients turns every rank's gradient of
// its slice's mean loss into the gradient of the global batch's mean loss (each
// slice weighted by its share of the positions, summed over the ranks), packed
// into a few flat buckets of up to bucket_bytes each, one all-reduce per bucket.
// Every rank then clips and steps the same gradients from the same parameters,
// so the parameters stay identical without being sent again.
//
// Also agreed in that step: which parameters got a gradient on any rank (a rank
// with an empty slice, or a parameter no path reaches, as Adam's skipping of
// gradient-less parameters needs), the global loss, a stop request from any rank
// (so all ranks stop after the same step), and rank 0's dropout offset.
//
// Dropout: rank r draws from its own Philox key, dropout_seed_for_rank(seed, r)
// (rank 0 keeps the model's, so one rank is the plain run), at the offset rank 0
// reached; rank 0 has the widest slice and draws the most, so no rank reuses
// counters. A checkpoint holds rank 0's (seed, offset), which restore every rank.
//
// The all-reduce follows the backward instead of overlapping it: backward() has
// no per-parameter completion hooks to start a bucket early.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "engine/comm/comm.h"
#include "datasets/batcher.h"
#include "engine/random.h"
#include "models/blocks/module.h"

namespace loom::models {

// Rank r's columns [begin, end) of a batch of `columns`: contiguous, in rank order,
// the first columns % size ranks one wider (rank 0 is never narrower than another).
std::pair<int64_t, int64_t> batch_slice(int64_t columns, int rank, int size);

// Rank r's dropout key: the model's seed for rank 0, a distinct key for each other rank.
uint64_t dropout_seed_for_rank(uint64_t seed, int rank);

struct ReducedStep {
  double loss = 0;      // mean over the global batch's positions
  bool stop = false;    // some rank asked to stop after this step
};

class DataParallel {
 public:
  static constexpr int64_t kDefaultBucketBytes = 16 << 20;

  DataParallel(comm::Communicator& comm, std::vector<Tensor> params, int64_t bucket_bytes = kDefaultBucketBytes);

  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
  comm::Communicator& communicator() const { return comm_; }

  // This rank's columns of a batch (all of it on one rank).
  datasets::Batch slice(const datasets::Batch& batch) const;

  // Every rank's parameters and buffers become rank 0's.
  void broadcast_from_rank0(const Module& model);

  // After this rank's backward of its slice's mean loss `local_loss` over
  // `local_positions` of the batch's `global_positions`: sets every parameter's
  // grad to the global gradient, sets `dropout` to rank 0's offset, and returns
  // the global loss and the agreed stop request.
  ReducedStep all_reduce_gradients(double local_loss, int64_t local_positions, int64_t global_positions,
                                   bool stop_requested, Generator& dropout);

  // Bytes one rank all-reduces per step (gradient buckets and the step's small record).
  int64_t bytes_per_step() const;
  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }
  // Seconds spent in all_reduce_gradients, and in the collectives alone, since the start.
  double seconds_reducing() const { return seconds_reducing_; }
  double seconds_in_collectives() const { return seconds_in_collectives_; }
  int64_t steps_reduced() const { return steps_reduced_; }

 private:
  struct Bucket {
    size_t first = 0, count = 0;  // params_[first, first + count)
    int64_t numel = 0;
  };

  comm::Communicator& comm_;
  std::vector<Tensor> params_;
  std::vector<Bucket> buckets_;
  double seconds_reducing_ = 0, seconds_in_collectives_ = 0;
  int64_t steps_reduced_ = 0;
};

}  // namespace loom::models
