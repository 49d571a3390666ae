// code_execution_rfwp.cpp: the authors' code execution generator (see the header).
#include "datasets/code_execution_rfwp.h"

#include <array>
#include <algorithm>

#include "engine/error.h"

namespace loom::datasets {

const std::vector<std::string> kCodeExecutionRfwpWords = {
    "<pad>", "x", "y", "z", "a", "b", "c", "d", "e", "f", "g", "0", "1", "2", "3",  "4", "5",
    "6",     "7", "8", "9", "=", ";", "++", "--", "print", "if", "<", ">", ":"};

const char* semantics_name(CodeSemantics semantics) {
  return semantics == CodeSemantics::authors ? "authors" : "exact";
}

namespace {

constexpr int64_t kMaxVariables = 10;
constexpr int64_t kValues = 10;  // assigned and compared values: 0 … 9
const char* const kVariableNames[kMaxVariables] = {"x", "y", "z", "a", "b", "c", "d", "e", "f", "g"};

enum Kind : int64_t { kAssign = 0, kStep = 1, kPrint = 2, kCondition = 3 };

// One program being drawn: the words, their targets and the machine's state.
class ProgramDrawer {
 public:
  ProgramDrawer(std::mt19937_64& rng, const CodeExecutionRfwpConfig& c) : rng_(rng), c_(c) {}

  LabelledSequence draw(const Vocabulary& vocabulary) {
    std::vector<std::string> words;
    for (int64_t count = 0; count < c_.statements; ++count) {
      const int64_t kind = count == 0 ? kAssign : count == c_.statements - 1 ? kPrint : uniform_below(rng_, 4);
      if (kind == kCondition) {
        condition(words);
      } else {
        statement(kind, /*carried_out=*/true, words);
      }
    }
    LabelledSequence out;
    out.tokens = vocabulary.encode(words);
    out.targets = std::move(targets_);
    out.label = out.targets.back();
    return out;
  }

 private:
  void emit(std::vector<std::string>& words, std::initializer_list<std::string> statement_words) {
    words.insert(words.end(), statement_words);
    targets_.insert(targets_.end(), statement_words.size(), 0);
  }

  int64_t defined_variable() { return defined_[uniform_below(rng_, static_cast<int64_t>(defined_.size()))]; }

  // A statement of kind assign, step or print; `carried_out` is false under a false if.
  void statement(int64_t kind, bool carried_out, std::vector<std::string>& words) {
    if (kind == kAssign) {
      const int64_t v = uniform_below(rng_, c_.variables);
      const int64_t value = uniform_below(rng_, kValues);
      const bool defined = std::find(defined_.begin(), defined_.end(), v) != defined_.end();
      // The authors' generator drops an assignment to a defined variable under a true if.
      const bool under_if = !top_level_;
      const bool applies = carried_out && !(under_if && defined && c_.semantics == CodeSemantics::authors);
      if (applies) {
        if (!defined) defined_.push_back(v);
        values_[v] = value;
      }
      emit(words, {kVariableNames[v], "=", std::to_string(value), ";"});
    } else if (kind == kStep) {
      const int64_t v = defined_variable();
      bool up = uniform_below(rng_, 2) == 0;
      if (up && values_[v] + 1 > kCodeTraceMaxValue) up = false;
      if (!up && values_[v] - 1 < kCodeTraceMinValue) up = true;
      if (carried_out) values_[v] += up ? 1 : -1;
      emit(words, {kVariableNames[v], up ? "++" : "--", ";"});
    } else {
      const int64_t v = defined_variable();
      emit(words, {"print", kVariableNames[v], ";"});
      if (carried_out) targets_.back() = CodeExecutionRfwp::value_class(values_[v]);
    }
  }

  void condition(std::vector<std::string>& words) {
    const bool greater = uniform_below(rng_, 2) == 1;
    const int64_t v = defined_variable();
    const int64_t k = uniform_below(rng_, kValues);
    emit(words, {"if", kVariableNames[v], greater ? ">" : "<", std::to_string(k), ":"});
    const bool taken = greater ? values_[v] > k : values_[v] < k;
    top_level_ = false;
    statement(uniform_below(rng_, 3), taken, words);
    top_level_ = true;
  }

  std::mt19937_64& rng_;
  const CodeExecutionRfwpConfig& c_;
  std::array<int64_t, kMaxVariables> values_{};
  std::vector<int64_t> defined_;  // in order of definition
  std::vector<int64_t> targets_;
  bool top_level_ = true;
};

}  // namespace

CodeExecutionRfwp::CodeExecutionRfwp(const CodeExecutionRfwpConfig& c)
    : config_(c), vocabulary_(kCodeExecutionRfwpWords) {
  LOOM_CHECK(c.variables >= 1 && c.variables <= kMaxVariables, "code execution: variables must be in [1, ",
             kMaxVariables, "], got ", c.variables);
  LOOM_CHECK(c.statements >= 2, "code execution: statements must be at least 2 (an assignment, then a print), got ",
             c.statements);
  check_split_sizes("code execution", c.train_size, c.valid_size, c.test_size);
}

int64_t CodeExecutionRfwp::split_size(Split split) const {
  return size_of_split(split, config_.train_size, config_.valid_size, config_.test_size);
}

LabelledSequence CodeExecutionRfwp::example(Split split, int64_t index) const {
  check_example_index("code execution", split, index, split_size(split));
  std::mt19937_64 rng = example_rng(config_.seed, split, static_cast<uint64_t>(index));
  return ProgramDrawer(rng, config_).draw(vocabulary_);
}

std::string CodeExecutionRfwp::name() const {
  return "code_execution_rfwp(variables=" + std::to_string(config_.variables) +
         ", statements=" + std::to_string(config_.statements) + ", semantics=" + semantics_name(config_.semantics) +
         ")";
}

std::string CodeExecutionRfwp::class_name(int64_t c) const {
  LOOM_CHECK(c >= 0 && c < num_classes(), "code execution: class ", c, " outside [0, ", num_classes(), ")");
  return c == 0 ? "_" : std::to_string(class_value(c));
}

}  // namespace loom::datasets
