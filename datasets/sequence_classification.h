// sequence_classification.h: what the algorithmic tasks (code_execution.h,
// listops.h) have in common: a fixed vocabulary of word tokens, examples that are
// a token sequence with one class label, three splits drawn from separate seeds,
// and padded sequence-first batches for a model that reads the label off the
// last real token of each sequence.
//
// Example `i` of a split is a pure function of (task parameters, seed, split, i):
// it is drawn from its own std::mt19937_64 seeded through std::seed_seq (both
// specified exactly by the C++ standard) with integer draws done here rather than
// by the library's distributions (which differ between implementations), so a
// data set is the same on every machine and needs no file.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace loom::datasets {

enum class Split { train = 0, valid = 1, test = 2 };
const char* split_name(Split split);

struct LabelledSequence {
  std::vector<int64_t> tokens;  // ids into the task's vocabulary, no padding
  int64_t label = 0;            // in [0, num_classes): the class of the last token
  // Tasks that label every token (SequenceTask::labels_every_token): one class per
  // token, tokens.size() of them, label == targets.back(). Empty otherwise.
  std::vector<int64_t> targets;
};

// A fixed word vocabulary; id 0 is always "<pad>".
class Vocabulary {
 public:
  explicit Vocabulary(std::vector<std::string> words);  // words[0] must be "<pad>"; no duplicates
  int64_t size() const { return static_cast<int64_t>(words_.size()); }
  const std::string& word(int64_t id) const;   // throws on an id outside [0, size)
  int64_t id(const std::string& word) const;   // throws naming an unknown word
  std::vector<int64_t> encode(const std::vector<std::string>& words) const;
  std::vector<std::string> decode(const std::vector<int64_t>& ids) const;
  std::string text(const std::vector<int64_t>& ids) const;  // words joined by single spaces
  const std::vector<std::string>& words() const { return words_; }

 private:
  std::vector<std::string> words_;
};

inline constexpr int64_t kPadId = 0;

// Right-padded, sequence-first: tokens [L, B] (row t holds token t of every
// sequence, kPadId past a sequence's end) with L the longest sequence, and per
// sequence its length (>= 1) and label.
struct ClassificationBatch {
  int64_t length = 0, batch = 0;
  std::vector<int64_t> tokens;   // [length, batch]
  std::vector<int64_t> lengths;  // [batch]
  std::vector<int64_t> labels;   // [batch]
  // [length, batch] when the examples label every token: kNoTarget past a
  // sequence's end. Empty otherwise.
  std::vector<int64_t> targets;
};
inline constexpr int64_t kNoTarget = -1;
// Throws when `examples` is empty, one of them has no tokens, or some label every
// token and others do not.
ClassificationBatch make_batch(const std::vector<LabelledSequence>& examples);

// What a task offers the training program.
class SequenceTask {
 public:
  virtual ~SequenceTask() = default;
  virtual const Vocabulary& vocabulary() const = 0;
  virtual int64_t num_classes() const = 0;
  // Examples in a split; example(split, i) needs i < split_size(split).
  virtual int64_t split_size(Split split) const = 0;
  virtual LabelledSequence example(Split split, int64_t index) const = 0;
  virtual std::string name() const = 0;  // e.g. "code_execution(variables=5, ...)"
  // Sequence labelling: every token carries a class (LabelledSequence::targets),
  // not only the last one.
  virtual bool labels_every_token() const { return false; }
  // The class of a token that outputs nothing (the authors' "_"), or -1 when the
  // task has none. Accuracies "per output" count only the other positions.
  virtual int64_t blank_class() const { return -1; }
  // A readable name of class c (a printed value, a digit).
  virtual std::string class_name(int64_t c) const { return std::to_string(c); }
};

// What every task's config and example() share: the size of `split` among the
// three, and the checks (messages start with `task`).
int64_t size_of_split(Split split, int64_t train_size, int64_t valid_size, int64_t test_size);
void check_split_sizes(const std::string& task, int64_t train_size, int64_t valid_size, int64_t test_size);
void check_example_index(const std::string& task, Split split, int64_t index, int64_t split_size);

// The random stream of one example: seeded by (seed, split, index) only.
std::mt19937_64 example_rng(uint64_t seed, Split split, uint64_t index);
// Uniform in [0, n), n >= 1, without modulo bias.
int64_t uniform_below(std::mt19937_64& rng, int64_t n);
// True with probability numerator / denominator (exact integer draw).
bool chance(std::mt19937_64& rng, int64_t numerator, int64_t denominator);

// The training order of epoch `epoch`: a permutation of 0 … n−1, a pure function
// of (seed, epoch).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, uint64_t epoch);

}  // namespace loom::datasets
