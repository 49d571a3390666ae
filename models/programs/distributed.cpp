#include "models/programs/distributed.h"

#include <chrono>

#include "autodiff/grad_mode.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace loom::models {

using Clock = std::chrono::steady_clock;

std::pair<int64_t, int64_t> batch_slice(int64_t columns, int rank, int size) {
  const int64_t base = columns / size, wider = columns % size;
  const int64_t begin = rank * base + std::min<int64_t>(rank, wider);
  return {begin, begin + base + (rank < wider ? 1 : 0)};
}

uint64_t dropout_seed_for_rank(uint64_t seed, int rank) {
  // Rank r's Philox key: the seed moved by r times the golden-ratio constant
  // (odd, so distinct ranks get distinct keys).
  return seed + static_cast<uint64_t>(rank) * 0x9E3779B97F4A7C15ull;
}

namespace {

// The communicator's collectives take tensors on its device (the CPU for MPI, the
// GPU for NCCL): a contiguous tensor elsewhere travels there and back.
template <class Collective>
void on_device_of(const comm::Communicator& comm, const Tensor& x, Collective&& collective) {
  if (x.device() == comm.device() && x.is_contiguous()) return collective(x);
  const Tensor there = x.to(comm.device()).contiguous();
  collective(there);
  copy_(x, there.to(x.device()));
}

}  // namespace

DataParallel::DataParallel(comm::Communicator& comm, std::vector<Tensor> params, int64_t bucket_bytes)
    : comm_(comm), params_(std::move(params)) {
  LOOM_CHECK(!params_.empty(), "data parallel: the model has no parameters");
  const DType dtype = params_.front().dtype();
  for (const Tensor& p : params_)
    LOOM_CHECK(p.dtype() == dtype && (dtype == DType::f32 || dtype == DType::f64),
               "data parallel: every parameter must have the same floating dtype");
  // Consecutive parameters fill a bucket up to bucket_bytes; a larger one gets its own.
  const int64_t element = static_cast<int64_t>(dtype_size(dtype));
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t numel = params_[i].numel();
    if (buckets_.empty() || (buckets_.back().numel + numel) * element > bucket_bytes)
      buckets_.push_back(Bucket{i, 0, 0});
    buckets_.back().count += 1;
    buckets_.back().numel += numel;
  }
}

datasets::Batch DataParallel::slice(const datasets::Batch& batch) const {
  if (size() == 1) return batch;
  const auto [begin, end] = batch_slice(batch.input.size(1), rank(), size());
  return {batch.input.narrow(1, begin, end - begin).contiguous(),
          batch.target.narrow(1, begin, end - begin).contiguous()};
}

void DataParallel::broadcast_from_rank0(const Module& model) {
  NoGradGuard no_grad;
  for (const NamedTensors& group : {model.named_parameters(), model.named_buffers()})
    for (const auto& [name, tensor] : group)
      on_device_of(comm_, tensor, [&](const Tensor& x) { comm_.broadcast(x, 0); });
}

int64_t DataParallel::bytes_per_step() const {
  int64_t numel = 0;
  for (const Bucket& b : buckets_) numel += b.numel;
  return numel * static_cast<int64_t>(dtype_size(params_.front().dtype())) +
         static_cast<int64_t>(params_.size() + 3) * 8;
}

ReducedStep DataParallel::all_reduce_gradients(double local_loss, int64_t local_positions, int64_t global_positions,
                                               bool stop_requested, Generator& dropout) {
  NoGradGuard no_grad;
  const auto start = Clock::now();
  double collectives = 0;
  auto timed = [&](const Tensor& buffer) {
    const auto t0 = Clock::now();
    on_device_of(comm_, buffer, [&](const Tensor& x) { comm_.all_reduce_sum(x); });
    collectives += std::chrono::duration<double>(Clock::now() - t0).count();
  };
  const double weight = static_cast<double>(local_positions) / static_cast<double>(global_positions);

  // The step's record, in float64 (exact for the flags and the offset):
  // [has grad per parameter..., weighted loss, stop, rank 0's dropout offset].
  const size_t n = params_.size();
  std::vector<double> record(n + 3, 0.0);
  for (size_t i = 0; i < n; ++i) record[i] = params_[i].grad().defined() ? 1.0 : 0.0;
  record[n] = local_positions > 0 ? local_loss * weight : 0.0;
  record[n + 1] = stop_requested ? 1.0 : 0.0;
  record[n + 2] = rank() == 0 ? static_cast<double>(dropout.offset()) : 0.0;
  const Tensor record_tensor = Tensor::from_vector(record, {static_cast<int64_t>(record.size())});
  timed(record_tensor);
  record = record_tensor.to_vector<double>();

  // The buckets: each rank's weighted gradients (zeros where it has none), summed.
  const Device device = params_.front().device();
  for (const Bucket& bucket : buckets_) {
    const Tensor flat = Tensor::empty({bucket.numel}, params_.front().dtype(), device);
    int64_t offset = 0;
    for (size_t i = bucket.first; i < bucket.first + bucket.count; ++i) {
      const Tensor& p = params_[i];
      const Tensor view = flat.narrow(0, offset, p.numel()).reshape(p.shape());
      if (p.grad().defined()) copy_(view, p.grad());
      else fill_(view, 0.0);
      offset += p.numel();
    }
    if (weight != 1.0) mul_(flat, weight);
    timed(flat);
    offset = 0;
    for (size_t i = bucket.first; i < bucket.first + bucket.count; ++i) {
      const Tensor& p = params_[i];
      // The grad is a view of the bucket: no copy back; zero_grad() drops it.
      if (record[i] > 0) p.set_grad(flat.narrow(0, offset, p.numel()).reshape(p.shape()));
      else p.zero_grad();
      offset += p.numel();
    }
  }
  dropout.set_state(dropout.seed(), static_cast<uint64_t>(record[n + 2]));
  seconds_in_collectives_ += collectives;
  seconds_reducing_ += std::chrono::duration<double>(Clock::now() - start).count();
  steps_reduced_ += 1;
  return {record[n], record[n + 1] > 0};
}

}  // namespace loom::models
