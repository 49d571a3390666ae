// code_execution.h: the code execution task of Irie, Schlag, Csordás and
// Schmidhuber's "Going Beyond Linear Transformers with Recurrent Fast Weight
// Programmers" (NeurIPS 2021; after Fan et al. 2020): read a short straight-line
// program with if-statements and predict the value it prints.
//
// A program over V variables (a, b, c, d, e; V ≤ 5) starts by assigning each a
// digit, runs S statements, and prints one variable:
//
//   a = 3 ; b = 7 ; c = 0 ;
//   b = a + 4 ;                          assignment: x = y + k or x = y - k
//   if c < 5 : a = b - 2 ; else : a = c + 1 ;   if-else (conditions y < k, y > k)
//   if b > 6 : c = c + 9 ;               if without else
//   print c
//
// Every value stays a digit 0 … 9: the generator executes the program as it
// draws it and picks each constant k so that the assignment's result (in the
// branch taken, and in the branch not taken, against the same state) is a digit.
// The label is the printed variable's final value, one of 10 classes. Tokens are
// words of a fixed vocabulary (kCodeExecutionWords), one per symbol, digit or
// keyword; a program of V variables and S statements has 4V + 2 + 6..15 per
// statement tokens.
//
// Statement kinds: an assignment with probability 1/2, an if-else and an if
// without else 1/4 each; the variables and the printed one are uniform.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/sequence_classification.h"

namespace loom::datasets {

// <pad>, a … e, 0 … 9, = + - ; : < > if else print
extern const std::vector<std::string> kCodeExecutionWords;

struct CodeExecutionConfig {
  int64_t variables = 5;    // V in [1, 5]
  int64_t statements = 8;   // S >= 1, after the initial assignments
  int64_t train_size = 10000, valid_size = 1000, test_size = 1000;
  uint64_t seed = 1;
};

class CodeExecution : public SequenceTask {
 public:
  // Throws loom::Error naming the bad field.
  explicit CodeExecution(const CodeExecutionConfig& config);

  const Vocabulary& vocabulary() const override { return vocabulary_; }
  int64_t num_classes() const override { return 10; }
  int64_t split_size(Split split) const override;
  LabelledSequence example(Split split, int64_t index) const override;
  std::string name() const override;

  const CodeExecutionConfig& config() const { return config_; }

 private:
  CodeExecutionConfig config_;
  Vocabulary vocabulary_;
};

}  // namespace loom::datasets
