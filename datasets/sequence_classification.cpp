// sequence_classification.cpp: vocabulary, batching and seeded draws of the algorithmic tasks.
#include "datasets/sequence_classification.h"

#include <algorithm>
#include <unordered_set>

#include "engine/error.h"

namespace loom::datasets {

const char* split_name(Split split) {
  switch (split) {
    case Split::train: return "train";
    case Split::valid: return "valid";
    case Split::test: return "test";
  }
  return "?";
}

Vocabulary::Vocabulary(std::vector<std::string> words) : words_(std::move(words)) {
  LOOM_CHECK(!words_.empty() && words_[0] == "<pad>", "vocabulary: the first word must be <pad>");
  std::unordered_set<std::string> seen;
  for (const std::string& w : words_) LOOM_CHECK(seen.insert(w).second, "vocabulary: the word '", w, "' appears twice");
}

const std::string& Vocabulary::word(int64_t id) const {
  LOOM_CHECK(id >= 0 && id < size(), "vocabulary: token id ", id, " is outside [0, ", size(), ")");
  return words_[id];
}

int64_t Vocabulary::id(const std::string& word) const {
  const auto it = std::find(words_.begin(), words_.end(), word);
  LOOM_CHECK(it != words_.end(), "vocabulary: unknown word '", word, "'");
  return it - words_.begin();
}

std::vector<int64_t> Vocabulary::encode(const std::vector<std::string>& words) const {
  std::vector<int64_t> ids;
  ids.reserve(words.size());
  for (const std::string& w : words) ids.push_back(id(w));
  return ids;
}

std::vector<std::string> Vocabulary::decode(const std::vector<int64_t>& ids) const {
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (int64_t i : ids) out.push_back(word(i));
  return out;
}

std::string Vocabulary::text(const std::vector<int64_t>& ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + word(ids[i]);
  return out;
}

ClassificationBatch make_batch(const std::vector<LabelledSequence>& examples) {
  LOOM_CHECK(!examples.empty(), "make_batch: no examples");
  ClassificationBatch b;
  b.batch = static_cast<int64_t>(examples.size());
  for (size_t i = 0; i < examples.size(); ++i) {
    const int64_t n = static_cast<int64_t>(examples[i].tokens.size());
    LOOM_CHECK(n >= 1, "make_batch: example ", i, " has no tokens");
    b.length = std::max(b.length, n);
    b.lengths.push_back(n);
    b.labels.push_back(examples[i].label);
  }
  b.tokens.assign(b.length * b.batch, kPadId);
  for (int64_t s = 0; s < b.batch; ++s)
    for (int64_t t = 0; t < b.lengths[s]; ++t) b.tokens[t * b.batch + s] = examples[s].tokens[t];
  const bool every_token = !examples.front().targets.empty();
  for (size_t i = 0; i < examples.size(); ++i) {
    const auto& e = examples[i];
    LOOM_CHECK(e.targets.empty() != every_token, "make_batch: example ", i, every_token ? " has no" : " has",
               " per-token targets, unlike example 0");
    LOOM_CHECK(e.targets.empty() || e.targets.size() == e.tokens.size(), "make_batch: example ", i, " has ",
               e.targets.size(), " targets for ", e.tokens.size(), " tokens");
  }
  if (every_token) {
    b.targets.assign(b.length * b.batch, kNoTarget);
    for (int64_t s = 0; s < b.batch; ++s)
      for (int64_t t = 0; t < b.lengths[s]; ++t) b.targets[t * b.batch + s] = examples[s].targets[t];
  }
  return b;
}

int64_t size_of_split(Split split, int64_t train_size, int64_t valid_size, int64_t test_size) {
  switch (split) {
    case Split::train: return train_size;
    case Split::valid: return valid_size;
    case Split::test: return test_size;
  }
  return 0;
}

void check_split_sizes(const std::string& task, int64_t train_size, int64_t valid_size, int64_t test_size) {
  LOOM_CHECK(train_size >= 1 && valid_size >= 1 && test_size >= 1, task,
             ": train_size, valid_size and test_size must be at least 1, got ", train_size, ", ", valid_size, ", ",
             test_size);
}

void check_example_index(const std::string& task, Split split, int64_t index, int64_t split_size) {
  LOOM_CHECK(index >= 0 && index < split_size, task, ": example ", index, " of the ", split_name(split),
             " split, which has ", split_size);
}

std::mt19937_64 example_rng(uint64_t seed, Split split, uint64_t index) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(split) + 1u, static_cast<uint32_t>(index),
                    static_cast<uint32_t>(index >> 32)};
  return std::mt19937_64(seq);
}

int64_t uniform_below(std::mt19937_64& rng, int64_t n) {
  LOOM_CHECK(n >= 1, "uniform_below: n must be at least 1, got ", n);
  const uint64_t range = static_cast<uint64_t>(n);
  const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
  uint64_t x;
  do x = rng();
  while (x >= limit);
  return static_cast<int64_t>(x % range);
}

bool chance(std::mt19937_64& rng, int64_t numerator, int64_t denominator) {
  return uniform_below(rng, denominator) < numerator;
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, uint64_t epoch) {
  // A stream of its own (0x5eed where the splits have 1, 2, 3).
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), 0x5eedu,
                    static_cast<uint32_t>(epoch), static_cast<uint32_t>(epoch >> 32)};
  std::mt19937_64 rng(seq);
  std::vector<int64_t> p(n);
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[uniform_below(rng, i + 1)]);
  return p;
}

}  // namespace loom::datasets
