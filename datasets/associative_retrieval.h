// associative_retrieval.h: the synthetic key→value retrieval task of Schlag,
// Irie and Schmidhuber's "Linear Transformers Are Secretly Fast Weight
// Programmers" (ICML 2021), with which they measure the capacity of a fast
// weight memory and its ability to overwrite an association.
//
// There are S keys and S values, both numbered 0 … S−1. A sequence is a list of
// (key, value) pairs, followed by a query key; the answer is the value paired
// with the query in the sequence.
//   capacity (setting 1): L = S pairs; the keys are a permutation of all S keys,
//     the values a permutation of all S values. Every key occurs once.
//   editing (setting 2):  L = 2S pairs; keys and values are drawn with
//     replacement. A key may occur several times; the answer is the value at its
//     LAST occurrence, so the memory must overwrite what it stored before.
// A training query is the key at a uniformly drawn position (so a key that occurs
// often is queried often, as in the authors' sampler). An evaluation sequence is
// queried with every distinct key it contains, in increasing key order, up to
// `max_queries` of them.
//
// Batches are pure functions of (seed, stream, index): batch i is the same on
// every call, in every process, with any thread count (std::mt19937_64 seeded
// through std::seed_seq, both specified exactly by the C++ standard, and integer
// draws done here rather than by the library's distributions, which are not).
#pragma once

#include <cstdint>
#include <vector>

namespace loom::datasets {

enum class RetrievalSetting { capacity = 1, editing = 2 };

// Row-major [batch, length] pairs and [batch, queries] queries. An evaluation
// batch pads a sequence that has fewer distinct keys than `queries` with
// mask 0 (query key 0, target 0); every real query has mask 1.
struct RetrievalBatch {
  int64_t batch = 0, length = 0, queries = 0;
  std::vector<int64_t> keys, values;         // [batch, length]
  std::vector<int64_t> query_keys, targets;  // [batch, queries]
  std::vector<double> query_mask;            // [batch, queries], 1 real / 0 padding
};

class AssociativeRetrieval {
 public:
  // num_keys S >= 1. Throws loom::Error on a bad argument.
  AssociativeRetrieval(int64_t num_keys, RetrievalSetting setting, uint64_t seed);

  int64_t num_keys() const { return num_keys_; }
  RetrievalSetting setting() const { return setting_; }
  // Pairs per training sequence: S (capacity) or 2S (editing).
  int64_t sequence_length() const;

  // Training batch number `index`: `batch_size` sequences of sequence_length()
  // pairs with one query each.
  RetrievalBatch training_batch(int64_t batch_size, uint64_t index) const;

  // Evaluation batch number `index` (a stream separate from training):
  // `sequences` fresh sequences of `length` pairs (0: sequence_length()), each
  // queried with its distinct keys in increasing order, at most max_queries.
  RetrievalBatch evaluation_batch(int64_t sequences, int64_t max_queries, uint64_t index, int64_t length = 0) const;

 private:
  int64_t num_keys_;
  RetrievalSetting setting_;
  uint64_t seed_;
};

}  // namespace loom::datasets
