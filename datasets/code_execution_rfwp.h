// code_execution_rfwp.h: the code execution task as Irie, Schlag, Csordás and
// Schmidhuber ran it in "Going Beyond Linear Transformers with Recurrent Fast
// Weight Programmers" (NeurIPS 2021), after Fan et al. 2020: the distribution of
// the authors' released generator (IDSIA/recurrent-fwp, algorithmic/utils/
// data_generator.py, run with a code length of 100), drawn here from loom's
// per-example streams.
//
// A program is `statements` statements over V variables (x y z a b c d e f g, the
// first V of them); a variable is defined by its first assignment and only a
// defined one is read. Each statement is drawn uniformly from four kinds, except
// that the first is an assignment and the last a print:
//
//   x = 7 ;          assignment: any variable, a value 0 … 9
//   y ++ ;  y -- ;   increment or decrement (each 1/2) of a defined variable
//   print z ;        print a defined variable
//   if x < 4 : S     a condition on a defined variable (< or >, each 1/2; a value
//   if x > 4 : S     0 … 9) guarding one statement S drawn uniformly from the
//                    three kinds above
//
// Values leave 0 … 9 only through ++ and --, which are kept in [−8, 16]: a step
// that would leave that range goes the other way (also when a false if skips it).
//
// Targets, one per token (the task is sequence labelling): the blank class
// everywhere except at the ";" of each print, which carries the printed value,
// or the blank class when the print sits under a false if. Classes: 0 the blank,
// 1 + (v + 8) the value v in [−8, 16] (26 classes).
//
// Two semantics of an assignment under a true if (config.semantics):
//   authors  as the released generator: it is carried out only when the variable is
//            not yet defined; an assignment to a defined variable under a true if is
//            ignored (the generator's draw_non_conditional applies an assignment only
//            to a variable not yet in its list of assigned ones). Use it to compare
//            with the paper.
//   exact    every statement under a true if is carried out, as a Python
//            interpreter would.
//
// A program of 100 statements has about 460 tokens and about 29 prints (about 25
// of them outside an if).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/sequence_classification.h"

namespace loom::datasets {

// <pad>, x y z a b c d e f g, 0 … 9, = ; ++ -- print if < > :
extern const std::vector<std::string> kCodeExecutionRfwpWords;

inline constexpr int64_t kCodeTraceMinValue = -8, kCodeTraceMaxValue = 16;

enum class CodeSemantics { authors, exact };
const char* semantics_name(CodeSemantics semantics);

struct CodeExecutionRfwpConfig {
  int64_t variables = 5;     // V in [1, 10]; the paper uses 3 and 5
  int64_t statements = 100;  // >= 2: the first is an assignment, the last a print
  CodeSemantics semantics = CodeSemantics::authors;
  int64_t train_size = 10000, valid_size = 1000, test_size = 1000;
  uint64_t seed = 1;
};

class CodeExecutionRfwp : public SequenceTask {
 public:
  // Throws loom::Error naming the bad field.
  explicit CodeExecutionRfwp(const CodeExecutionRfwpConfig& config);

  const Vocabulary& vocabulary() const override { return vocabulary_; }
  int64_t num_classes() const override { return 2 + kCodeTraceMaxValue - kCodeTraceMinValue; }
  int64_t split_size(Split split) const override;
  LabelledSequence example(Split split, int64_t index) const override;
  std::string name() const override;
  bool labels_every_token() const override { return true; }
  int64_t blank_class() const override { return 0; }
  std::string class_name(int64_t c) const override;

  // The class of printed value v, and back.
  static int64_t value_class(int64_t value) { return 1 + value - kCodeTraceMinValue; }
  static int64_t class_value(int64_t c) { return c - 1 + kCodeTraceMinValue; }

  const CodeExecutionRfwpConfig& config() const { return config_; }

 private:
  CodeExecutionRfwpConfig config_;
  Vocabulary vocabulary_;
};

}  // namespace loom::datasets
