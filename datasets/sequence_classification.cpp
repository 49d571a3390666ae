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
  return b;
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
