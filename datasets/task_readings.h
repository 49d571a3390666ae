// task_readings.h: how answers to the algorithmic tasks are scored, and the
// shallow rule-based readings a trained model must beat to show it learnt more.
//
// Scoring, as the authors' eval_utils.py does it:
//   accuracy         the share of sequences whose every labelled position is right:
//                    for code execution the paper's program accuracy (blank
//                    positions included), for a one-label task the label accuracy;
//   output accuracy  for tasks with a blank class: the share of non-blank target
//                    positions (the printed values) predicted right.
//
// Readings, each computed on a split from its tokens alone, with no learning
// except the majority class counted on the training split:
//   every task        "majority class": the training split's most frequent label
//                     (for code execution: blank everywhere, and the most frequent
//                     printed value at every print);
//   code_execution_rfwp
//                     "skip every if": run the program with each guarded statement
//                     left out (a print under an if predicts blank);
//                     "run every if": run each guarded statement as if its
//                     condition held;
//   listops_rfwp      "top k levels" for k = 1, 2, 3: evaluate the operators of the
//                     top k levels and guess the majority label for every operator
//                     below them.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "datasets/sequence_classification.h"

namespace loom::datasets {

class Scorer {
 public:
  explicit Scorer(int64_t blank_class = -1) : blank_(blank_class) {}
  // One sequence labelled at every token: predicted and targets of equal length.
  void add_sequence(const std::vector<int64_t>& predicted, const std::vector<int64_t>& targets);
  // One sequence with one label.
  void add_label(int64_t predicted, int64_t label);

  int64_t sequences() const { return sequences_; }
  int64_t outputs() const { return outputs_; }
  double accuracy() const;         // 0 when nothing was added
  double output_accuracy() const;  // NaN without a blank class or outputs

 private:
  int64_t blank_;
  int64_t sequences_ = 0, right_sequences_ = 0, outputs_ = 0, right_outputs_ = 0;
};

struct ReadingScore {
  std::string name;
  double accuracy = 0.0;
  double output_accuracy = NAN;
};

// Every reading that applies to `task`, scored on `split` (its first `limit`
// examples when limit > 0). The majority class is counted on the first
// min(train size, 10,000) training examples.
std::vector<ReadingScore> score_readings(const SequenceTask& task, Split split, int64_t limit = 0);

}  // namespace loom::datasets
