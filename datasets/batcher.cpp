#include "datasets/batcher.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/error.h"

namespace loom::datasets {

namespace {

// The generator of one epoch. std::seed_seq and mt19937_64 are specified
// exactly by the standard, so the plan is the same with every compiler.
std::mt19937_64 epoch_rng(uint64_t seed, int64_t epoch) {
  const auto e = static_cast<uint64_t>(epoch);
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(e),
                    static_cast<uint32_t>(e >> 32)};
  return std::mt19937_64(seq);
}

// Uniform in [0, n) without modulo bias (std::uniform_int_distribution is not
// specified exactly, so it could differ between standard libraries).
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t threshold = (0 - n) % n;  // 2^64 mod n: values below it would favour small results
  for (;;) {
    const uint64_t x = rng();
    if (x >= threshold) return x % n;
  }
}

struct Plan {
  std::vector<int64_t> order;   // items in visiting order
  std::vector<int64_t> starts;  // start token of each item
};

Plan make_plan(uint64_t seed, int64_t epoch, int64_t num_items, int64_t seq_len, int64_t num_tokens) {
  std::mt19937_64 rng = epoch_rng(seed, epoch);
  Plan plan;
  // Fisher-Yates: a uniform permutation, each item exactly once.
  plan.order.resize(static_cast<size_t>(num_items));
  for (int64_t i = 0; i < num_items; ++i) plan.order[i] = i;
  for (int64_t i = num_items - 1; i > 0; --i)
    std::swap(plan.order[i], plan.order[static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(i) + 1))]);
  // labml: start += random.randint(0, min(L - 1, N - (start + L + 1))), inclusive.
  plan.starts.resize(static_cast<size_t>(num_items));
  for (int64_t i = 0; i < num_items; ++i) {
    const int64_t base = i * seq_len;
    const int64_t max_shift = std::min(seq_len - 1, num_tokens - (base + seq_len + 1));
    plan.starts[i] = base + static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(max_shift) + 1));
  }
  return plan;
}

}  // namespace

// ---- BatcherState ------------------------------------------------------------------------

std::string BatcherState::to_json() const {
  return nlohmann::ordered_json{{"seed", seed}, {"epoch", epoch}, {"position", position}}.dump();
}

BatcherState BatcherState::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    LOOM_FAIL("BatcherState: not valid JSON: ", e.what());
  }
  LOOM_CHECK(j.is_object(), "BatcherState: expected a JSON object, got ", j.dump());
  for (const char* key : {"seed", "epoch", "position"})
    LOOM_CHECK(j.contains(key) && j[key].is_number_unsigned(), "BatcherState: \"", key,
               "\" must be a non-negative integer, got ", j.contains(key) ? j[key].dump() : "nothing");
  BatcherState s;
  s.seed = j["seed"].get<uint64_t>();
  s.epoch = j["epoch"].get<int64_t>();
  s.position = j["position"].get<int64_t>();
  return s;
}

// ---- ShuffledBatcher ------------------------------------------------------------------------

ShuffledBatcher::ShuffledBatcher(std::vector<int64_t> ids, int64_t seq_len, int64_t batch_size, uint64_t seed,
                                 BatchOrder order)
    : ids_(std::move(ids)), seq_len_(seq_len), batch_size_(batch_size), order_kind_(order) {
  LOOM_CHECK(seq_len >= 1, "ShuffledBatcher: seq_len must be positive, got ", seq_len);
  LOOM_CHECK(batch_size >= 1, "ShuffledBatcher: batch_size must be positive, got ", batch_size);
  const auto n = static_cast<int64_t>(ids_.size());
  state_.seed = seed;
  if (order == BatchOrder::streams) {
    stream_length_ = n >= 1 ? (n - 1) / batch_size : 0;
    num_items_ = stream_length_ >= 1 ? (stream_length_ - 1) / seq_len : 0;
    // The last target of the epoch, b·S + num_items·L, stays inside stream b's S tokens.
    LOOM_CHECK(num_items_ >= 1, "ShuffledBatcher: ", n, " tokens cut into ", batch_size, " streams (data.carry_over) give ",
               stream_length_, " tokens per stream, too few for one batch of seq_len ", seq_len, " (each stream needs ",
               seq_len + 1, "); use a smaller data.batch_size or data.seq_len");
    return;
  }
  num_items_ = n >= 1 ? (n - 1) / seq_len : 0;
  LOOM_CHECK(num_items_ >= 1, "ShuffledBatcher: ", n, " tokens are too few for seq_len ", seq_len,
             " (one item needs seq_len + 1 = ", seq_len + 1, ")");
}

std::vector<int64_t> ShuffledBatcher::item_order(int64_t epoch) const {
  return make_plan(state_.seed, epoch, num_items_, seq_len_, static_cast<int64_t>(ids_.size())).order;
}

std::vector<int64_t> ShuffledBatcher::item_starts(int64_t epoch) const {
  return make_plan(state_.seed, epoch, num_items_, seq_len_, static_cast<int64_t>(ids_.size())).starts;
}

void ShuffledBatcher::plan_epoch() {
  if (planned_epoch_ == state_.epoch) return;
  Plan plan = make_plan(state_.seed, state_.epoch, num_items_, seq_len_, static_cast<int64_t>(ids_.size()));
  order_ = std::move(plan.order);
  starts_ = std::move(plan.starts);
  planned_epoch_ = state_.epoch;
}

Batch ShuffledBatcher::next_from_streams() {
  const int64_t width = batch_size_, offset = state_.position * seq_len_;
  std::vector<int64_t> input(static_cast<size_t>(seq_len_ * width)), target(input.size());
  for (int64_t b = 0; b < width; ++b) {
    const int64_t start = b * stream_length_ + offset;
    for (int64_t t = 0; t < seq_len_; ++t) {
      input[t * width + b] = ids_[start + t];
      target[t * width + b] = ids_[start + t + 1];
    }
  }
  if (++state_.position == batches_per_epoch()) {
    ++state_.epoch;
    state_.position = 0;
  }
  return {Tensor::from_vector(input, {seq_len_, width}), Tensor::from_vector(target, {seq_len_, width})};
}

Batch ShuffledBatcher::next() {
  if (order_kind_ == BatchOrder::streams) return next_from_streams();
  plan_epoch();
  const int64_t first = state_.position * batch_size_;
  const int64_t width = std::min(batch_size_, num_items_ - first);
  std::vector<int64_t> input(static_cast<size_t>(seq_len_ * width)), target(input.size());
  for (int64_t b = 0; b < width; ++b) {
    const int64_t start = starts_[order_[first + b]];
    for (int64_t t = 0; t < seq_len_; ++t) {
      input[t * width + b] = ids_[start + t];
      target[t * width + b] = ids_[start + t + 1];
    }
  }
  if (++state_.position == batches_per_epoch()) {
    ++state_.epoch;
    state_.position = 0;
  }
  return {Tensor::from_vector(input, {seq_len_, width}), Tensor::from_vector(target, {seq_len_, width})};
}

void ShuffledBatcher::set_state(const BatcherState& state) {
  LOOM_CHECK(state.epoch >= 0, "ShuffledBatcher::set_state: negative epoch ", state.epoch);
  LOOM_CHECK(state.position >= 0 && state.position < batches_per_epoch(), "ShuffledBatcher::set_state: position ",
             state.position, " is outside the ", batches_per_epoch(), " batches of an epoch");
  if (state.seed != state_.seed) planned_epoch_ = -1;
  state_ = state;
}

}  // namespace loom::datasets
