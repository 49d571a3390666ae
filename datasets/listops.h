// listops.h: sequential ListOps (Nangia and Bowman 2018), as Irie, Schlag,
// Csordás and Schmidhuber use it to test recurrent fast weight programmers
// (NeurIPS 2021) at depths 10 and 15: evaluate a nested list expression over
// digits, read as a flat token sequence, to its value, one of 10 classes.
//
//   [MAX 2 9 [MIN 4 7 ] 0 ]            = 9
//   [SM 3 [MED 1 5 8 2 ] 6 ]           = (3 + 3 + 6) mod 10 = 2
//
// Operators: MIN, MAX, MED (the median; for an even count the floor of the mean
// of the two middle values, NumPy's int(np.median)), SM (sum modulo 10). Each
// takes 2 … max_args arguments. The depth of a digit is 0, of an expression 1 +
// the largest depth of its arguments.
//
// How a tree is drawn: a target depth d uniform in [min_depth, max_depth]; a spine
// of d nested operators, each holding the next one at a uniform argument position;
// every other argument is an operator with probability operation_percent / 100
// (while the depth below max_depth allows one) and a uniform digit otherwise. So
// every tree's depth lies in [min_depth, max_depth]. Trees longer than max_length
// tokens are redrawn (from the same example stream, so still deterministic).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/sequence_classification.h"

namespace loom::datasets {

// <pad>, 0 … 9, [MIN [MAX [MED [SM ]
extern const std::vector<std::string> kListOpsWords;

struct ListOpsConfig {
  int64_t max_depth = 10;          // >= 1
  int64_t min_depth = 10;          // in [1, max_depth]
  int64_t max_args = 5;            // >= 2
  int64_t operation_percent = 15;  // in [0, 100): chance that an off-spine argument is an operator
  int64_t max_length = 400;        // tokens; must admit a tree of min_depth (3·min_depth + 1)
  int64_t train_size = 10000, valid_size = 1000, test_size = 1000;
  uint64_t seed = 1;
};

class ListOps : public SequenceTask {
 public:
  // Throws loom::Error naming the bad field.
  explicit ListOps(const ListOpsConfig& config);

  const Vocabulary& vocabulary() const override { return vocabulary_; }
  int64_t num_classes() const override { return 10; }
  int64_t split_size(Split split) const override;
  LabelledSequence example(Split split, int64_t index) const override;
  std::string name() const override;

  const ListOpsConfig& config() const { return config_; }

 private:
  ListOpsConfig config_;
  Vocabulary vocabulary_;
};

}  // namespace loom::datasets
