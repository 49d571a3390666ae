// code_execution.cpp: the code execution generator (see the header).
#include "datasets/code_execution.h"

#include <array>

#include "engine/error.h"

namespace loom::datasets {

const std::vector<std::string> kCodeExecutionWords = {
    "<pad>", "a", "b", "c", "d", "e", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
    "=",     "+", "-", ";", ":", "<", ">", "if", "else", "print"};

namespace {

constexpr int64_t kMaxVariables = 5;
constexpr int64_t kDigits = 10;

std::string variable_name(int64_t v) { return std::string(1, static_cast<char>('a' + v)); }
std::string digit(int64_t d) { return std::to_string(d); }

using State = std::array<int64_t, kMaxVariables>;

// x = y ± k with k in 1 … 9 such that the result is a digit, given y's value.
// Appends the tokens and returns the result. Addition is possible unless y = 9,
// subtraction unless y = 0; one of the two always is.
int64_t draw_assignment(std::mt19937_64& rng, int64_t variables, const State& state, int64_t target,
                        std::vector<std::string>& words) {
  const int64_t source = uniform_below(rng, variables);
  const int64_t y = state[source];
  bool plus = chance(rng, 1, 2);
  if (plus && y == kDigits - 1) plus = false;
  if (!plus && y == 0) plus = true;
  const int64_t room = plus ? kDigits - 1 - y : y;  // the largest k that keeps a digit
  const int64_t k = 1 + uniform_below(rng, room);
  words.insert(words.end(), {variable_name(target), "=", variable_name(source), plus ? "+" : "-", digit(k), ";"});
  return plus ? y + k : y - k;
}

std::vector<std::string> draw_program(std::mt19937_64& rng, const CodeExecutionConfig& c, int64_t& printed_value) {
  std::vector<std::string> words;
  State state{};
  for (int64_t v = 0; v < c.variables; ++v) {
    state[v] = uniform_below(rng, kDigits);
    words.insert(words.end(), {variable_name(v), "=", digit(state[v]), ";"});
  }
  for (int64_t s = 0; s < c.statements; ++s) {
    const int64_t kind = uniform_below(rng, 4);  // 0, 1: assignment; 2: if-else; 3: if
    const int64_t target = uniform_below(rng, c.variables);
    if (kind < 2) {
      state[target] = draw_assignment(rng, c.variables, state, target, words);
      continue;
    }
    const int64_t tested = uniform_below(rng, c.variables);
    const bool less = chance(rng, 1, 2);
    const int64_t k = uniform_below(rng, kDigits);
    words.insert(words.end(), {"if", variable_name(tested), less ? "<" : ">", digit(k), ":"});
    const bool taken = less ? state[tested] < k : state[tested] > k;
    const int64_t then_value = draw_assignment(rng, c.variables, state, target, words);
    int64_t else_value = state[target];
    if (kind == 2) {
      words.insert(words.end(), {"else", ":"});
      else_value = draw_assignment(rng, c.variables, state, target, words);
    }
    state[target] = taken ? then_value : else_value;
  }
  const int64_t printed = uniform_below(rng, c.variables);
  words.insert(words.end(), {"print", variable_name(printed)});
  printed_value = state[printed];
  return words;
}

}  // namespace

CodeExecution::CodeExecution(const CodeExecutionConfig& c) : config_(c), vocabulary_(kCodeExecutionWords) {
  LOOM_CHECK(c.variables >= 1 && c.variables <= kMaxVariables, "code execution: variables must be in [1, ",
             kMaxVariables, "], got ", c.variables);
  LOOM_CHECK(c.statements >= 1, "code execution: statements must be at least 1, got ", c.statements);
  check_split_sizes("code execution", c.train_size, c.valid_size, c.test_size);
}

int64_t CodeExecution::split_size(Split split) const {
  return size_of_split(split, config_.train_size, config_.valid_size, config_.test_size);
}

LabelledSequence CodeExecution::example(Split split, int64_t index) const {
  check_example_index("code execution", split, index, split_size(split));
  std::mt19937_64 rng = example_rng(config_.seed, split, static_cast<uint64_t>(index));
  LabelledSequence out;
  const std::vector<std::string> words = draw_program(rng, config_, out.label);
  out.tokens = vocabulary_.encode(words);
  return out;
}

std::string CodeExecution::name() const {
  return "code_execution(variables=" + std::to_string(config_.variables) +
         ", statements=" + std::to_string(config_.statements) + ")";
}

}  // namespace loom::datasets
