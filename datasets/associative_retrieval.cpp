// associative_retrieval.cpp: the associative-retrieval generator (see the header).
#include "datasets/associative_retrieval.h"

#include <algorithm>
#include <random>

#include "engine/error.h"

namespace loom::datasets {

namespace {

// The two independent streams of batches.
constexpr uint64_t kTrainingStream = 1, kEvaluationStream = 2;

std::mt19937_64 rng_for(uint64_t seed, uint64_t stream, uint64_t index) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(stream),
                    static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32)};
  return std::mt19937_64(seq);
}

// Uniform in [0, n) without modulo bias (rejection of the top partial range).
int64_t below(std::mt19937_64& rng, int64_t n) {
  const uint64_t range = static_cast<uint64_t>(n);
  const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
  uint64_t x;
  do x = rng();
  while (x >= limit);
  return static_cast<int64_t>(x % range);
}

// A uniformly random permutation of 0 … n−1 (Fisher–Yates).
std::vector<int64_t> permutation(std::mt19937_64& rng, int64_t n) {
  std::vector<int64_t> p(n);
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[below(rng, i + 1)]);
  return p;
}

// One sequence of `length` pairs appended to keys and values.
void draw_sequence(std::mt19937_64& rng, RetrievalSetting setting, int64_t num_keys, int64_t length,
                   std::vector<int64_t>& keys, std::vector<int64_t>& values) {
  if (setting == RetrievalSetting::capacity) {
    // Without replacement: the first `length` entries of two permutations.
    const std::vector<int64_t> k = permutation(rng, num_keys), v = permutation(rng, num_keys);
    keys.insert(keys.end(), k.begin(), k.begin() + length);
    values.insert(values.end(), v.begin(), v.begin() + length);
  } else {
    for (int64_t i = 0; i < length; ++i) keys.push_back(below(rng, num_keys));
    for (int64_t i = 0; i < length; ++i) values.push_back(below(rng, num_keys));
  }
}

// The value at the last occurrence of `key` in keys[0, length).
int64_t last_value_of(const int64_t* keys, const int64_t* values, int64_t length, int64_t key) {
  for (int64_t i = length - 1; i >= 0; --i)
    if (keys[i] == key) return values[i];
  throw Error("associative retrieval: query key " + std::to_string(key) + " is not in the sequence");
}

}  // namespace

AssociativeRetrieval::AssociativeRetrieval(int64_t num_keys, RetrievalSetting setting, uint64_t seed)
    : num_keys_(num_keys), setting_(setting), seed_(seed) {
  LOOM_CHECK(num_keys >= 1, "associative retrieval: the number of keys must be at least 1, got ", num_keys);
  LOOM_CHECK(setting == RetrievalSetting::capacity || setting == RetrievalSetting::editing,
             "associative retrieval: setting must be 1 (capacity) or 2 (editing), got ", static_cast<int>(setting));
}

int64_t AssociativeRetrieval::sequence_length() const {
  return setting_ == RetrievalSetting::capacity ? num_keys_ : 2 * num_keys_;
}

RetrievalBatch AssociativeRetrieval::training_batch(int64_t batch_size, uint64_t index) const {
  LOOM_CHECK(batch_size >= 1, "associative retrieval: batch size must be at least 1, got ", batch_size);
  std::mt19937_64 rng = rng_for(seed_, kTrainingStream, index);
  RetrievalBatch b;
  b.batch = batch_size;
  b.length = sequence_length();
  b.queries = 1;
  for (int64_t s = 0; s < batch_size; ++s) {
    draw_sequence(rng, setting_, num_keys_, b.length, b.keys, b.values);
    const int64_t* k = b.keys.data() + s * b.length;
    const int64_t query = k[below(rng, b.length)];
    b.query_keys.push_back(query);
    b.targets.push_back(last_value_of(k, b.values.data() + s * b.length, b.length, query));
    b.query_mask.push_back(1.0);
  }
  return b;
}

RetrievalBatch AssociativeRetrieval::evaluation_batch(int64_t sequences, int64_t max_queries, uint64_t index,
                                                      int64_t length) const {
  LOOM_CHECK(sequences >= 1, "associative retrieval: evaluation needs at least 1 sequence, got ", sequences);
  LOOM_CHECK(max_queries >= 1, "associative retrieval: max_queries must be at least 1, got ", max_queries);
  if (length == 0) length = sequence_length();
  LOOM_CHECK(length >= 1, "associative retrieval: the evaluation length must be at least 1, got ", length);
  LOOM_CHECK(setting_ == RetrievalSetting::editing || length <= num_keys_,
             "associative retrieval: a capacity sequence holds each of the ", num_keys_,
             " keys at most once, so it cannot have ", length, " pairs");
  std::mt19937_64 rng = rng_for(seed_, kEvaluationStream, index);
  RetrievalBatch b;
  b.batch = sequences;
  b.length = length;
  std::vector<std::vector<int64_t>> distinct(sequences);
  for (int64_t s = 0; s < sequences; ++s) {
    draw_sequence(rng, setting_, num_keys_, length, b.keys, b.values);
    std::vector<int64_t>& d = distinct[s];
    d.assign(b.keys.begin() + s * length, b.keys.begin() + (s + 1) * length);
    std::sort(d.begin(), d.end());
    d.erase(std::unique(d.begin(), d.end()), d.end());
    if (static_cast<int64_t>(d.size()) > max_queries) d.resize(max_queries);
    b.queries = std::max<int64_t>(b.queries, static_cast<int64_t>(d.size()));
  }
  for (int64_t s = 0; s < sequences; ++s) {
    const int64_t* k = b.keys.data() + s * length;
    const int64_t* v = b.values.data() + s * length;
    for (int64_t j = 0; j < b.queries; ++j) {
      const bool real = j < static_cast<int64_t>(distinct[s].size());
      b.query_keys.push_back(real ? distinct[s][j] : 0);
      b.targets.push_back(real ? last_value_of(k, v, length, distinct[s][j]) : 0);
      b.query_mask.push_back(real ? 1.0 : 0.0);
    }
  }
  return b;
}

}  // namespace loom::datasets
