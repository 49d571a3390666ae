// listops_rfwp.h: sequential ListOps as Irie, Schlag, Csordás and Schmidhuber
// ran it (NeurIPS 2021): the distribution of the authors' released generator
// (IDSIA/recurrent-fwp, algorithmic/utils/nyu_listops.py, a fork of Nangia and
// Bowman's), drawn here from loom's per-example streams.
//
//   [MAX 2 9 [MIN 4 7 ] 0 ]            = 9        (depth 2)
//   [FIRST [MIN 3 8 ] 6 ]              = 3
//
// How a tree is drawn: the root is an operator; below it, each argument is an
// operator with probability 1/4 and a uniform digit otherwise. An operator takes
// 2 … max_args arguments (uniform) and is drawn uniformly from the operator set.
// No operator sits below 19 levels of operators (the released generator's
// MAX_DEPTH = 20 in its own counting). Trees are redrawn until their depth is
// exactly `depth`: 0 for a digit, 1 + the deepest argument for an expression, so
// "[MAX 1 2 ]" has depth 1. This is the paper's depth; the released generator
// counts one more (its --only_depth 11 makes the paper's depth-10 data).
//
// Operator sets (config.operators):
//   min_max_first       MIN, MAX, FIRST: the released generator's OPERATORS list
//   min_max_med_sm      MIN, MAX, MED (median, the floor of the middle pair's mean
//                       for an even count), SM (sum modulo 10): Nangia and Bowman's
// The label is the value, one of 10 classes, read at the last token.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/sequence_classification.h"

namespace loom::datasets {

// <pad>, 0 … 9, [MIN [MAX [FIRST [MED [SM ]
extern const std::vector<std::string> kListOpsRfwpWords;

enum class ListOpsOperators { min_max_first, min_max_med_sm };
const char* operators_name(ListOpsOperators operators);

inline constexpr int64_t kListOpsRfwpMaxDepth = 19;

struct ListOpsRfwpConfig {
  int64_t depth = 10;  // in [1, 19]; the paper uses 10 and 15
  int64_t max_args = 5;  // >= 2
  ListOpsOperators operators = ListOpsOperators::min_max_first;
  int64_t train_size = 10000, valid_size = 1000, test_size = 1000;
  uint64_t seed = 1;
};

class ListOpsRfwp : public SequenceTask {
 public:
  // Throws loom::Error naming the bad field.
  explicit ListOpsRfwp(const ListOpsRfwpConfig& config);

  const Vocabulary& vocabulary() const override { return vocabulary_; }
  int64_t num_classes() const override { return 10; }
  int64_t split_size(Split split) const override;
  // Throws when no tree of the asked depth turns up in a very large number of draws.
  LabelledSequence example(Split split, int64_t index) const override;
  std::string name() const override;

  const ListOpsRfwpConfig& config() const { return config_; }

 private:
  ListOpsRfwpConfig config_;
  Vocabulary vocabulary_;
};

}  // namespace loom::datasets
