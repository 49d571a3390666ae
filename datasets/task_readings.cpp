// task_readings.cpp: scoring and the shallow readings of the algorithmic tasks (see the header).
#include "datasets/task_readings.h"

#include <algorithm>
#include <functional>
#include <map>

#include "datasets/code_execution_rfwp.h"
#include "datasets/listops_rfwp.h"
#include "engine/error.h"

namespace loom::datasets {

void Scorer::add_sequence(const std::vector<int64_t>& predicted, const std::vector<int64_t>& targets) {
  LOOM_CHECK(predicted.size() == targets.size(), "Scorer: ", predicted.size(), " predictions for ", targets.size(),
             " targets");
  bool all = true;
  for (size_t t = 0; t < targets.size(); ++t) {
    const bool right = predicted[t] == targets[t];
    all = all && right;
    if (blank_ >= 0 && targets[t] != blank_) {
      ++outputs_;
      right_outputs_ += right;
    }
  }
  ++sequences_;
  right_sequences_ += all;
}

void Scorer::add_label(int64_t predicted, int64_t label) {
  ++sequences_;
  right_sequences_ += predicted == label;
}

double Scorer::accuracy() const {
  return sequences_ ? static_cast<double>(right_sequences_) / static_cast<double>(sequences_) : 0.0;
}

double Scorer::output_accuracy() const {
  return outputs_ ? static_cast<double>(right_outputs_) / static_cast<double>(outputs_) : NAN;
}

namespace {

constexpr int64_t kMajorityExamples = 10000;

// The most frequent label (one-label tasks) or non-blank target (labelled tokens)
// of the training split; the smallest class on ties.
int64_t majority(const SequenceTask& task) {
  std::map<int64_t, int64_t> counts;
  const int64_t n = std::min(task.split_size(Split::train), kMajorityExamples);
  for (int64_t i = 0; i < n; ++i) {
    const LabelledSequence e = task.example(Split::train, i);
    if (!task.labels_every_token()) {
      ++counts[e.label];
      continue;
    }
    for (int64_t t : e.targets)
      if (t != task.blank_class()) ++counts[t];
  }
  int64_t best = 0, best_count = -1;
  for (const auto& [c, count] : counts)
    if (count > best_count) best = c, best_count = count;
  return best;
}

using Predict = std::function<std::vector<int64_t>(const std::vector<std::string>& words, const LabelledSequence& e)>;

ReadingScore score(const SequenceTask& task, Split split, int64_t limit, const std::string& name,
                   const Predict& predict) {
  Scorer scorer(task.blank_class());
  const int64_t n = limit > 0 ? std::min(limit, task.split_size(split)) : task.split_size(split);
  for (int64_t i = 0; i < n; ++i) {
    const LabelledSequence e = task.example(split, i);
    const std::vector<int64_t> p = predict(task.vocabulary().decode(e.tokens), e);
    if (task.labels_every_token()) {
      scorer.add_sequence(p, e.targets);
    } else {
      scorer.add_label(p.front(), e.label);
    }
  }
  return {name, scorer.accuracy(), scorer.output_accuracy()};
}

// ---- code execution: run the words, with a rule for the guarded statements ----------

enum class IfRule { skip, run };

std::vector<int64_t> run_program(const std::vector<std::string>& w, IfRule rule) {
  std::map<std::string, int64_t> values;
  std::vector<int64_t> out(w.size(), 0);
  size_t i = 0;
  // One unguarded statement at w[i]; `runs` false leaves the state alone.
  const auto statement = [&](bool runs) {
    if (w.at(i) == "print") {
      if (runs) out.at(i + 2) = CodeExecutionRfwp::value_class(values[w.at(i + 1)]);
      i += 3;
    } else if (w.at(i + 1) == "=") {
      if (runs) values[w.at(i)] = std::stoll(w.at(i + 2));
      i += 4;
    } else {
      if (runs) values[w.at(i)] += w.at(i + 1) == "++" ? 1 : -1;
      i += 3;
    }
  };
  while (i < w.size()) {
    if (w[i] == "if") {
      i += 5;  // if v < k :
      statement(rule == IfRule::run);
    } else {
      statement(true);
    }
  }
  return out;
}

// ---- ListOps: evaluate the top levels, guess below ---------------------------------

int64_t evaluate_levels(const std::vector<std::string>& w, size_t& i, int64_t level, int64_t levels, int64_t guess) {
  const std::string& word = w.at(i++);
  if (word.size() == 1 && word[0] >= '0' && word[0] <= '9') return word[0] - '0';
  std::vector<int64_t> args;
  while (w.at(i) != "]") args.push_back(evaluate_levels(w, i, level + 1, levels, guess));
  ++i;
  if (level >= levels) return guess;
  if (word == "[MIN") return *std::min_element(args.begin(), args.end());
  if (word == "[MAX") return *std::max_element(args.begin(), args.end());
  if (word == "[FIRST") return args.front();
  if (word == "[SM") {
    int64_t s = 0;
    for (int64_t a : args) s += a;
    return s % 10;
  }
  LOOM_CHECK(word == "[MED", "listops reading: unknown word '", word, "'");
  std::sort(args.begin(), args.end());
  const size_t n = args.size();
  return n % 2 ? args[n / 2] : (args[n / 2 - 1] + args[n / 2]) / 2;
}

}  // namespace

std::vector<ReadingScore> score_readings(const SequenceTask& task, Split split, int64_t limit) {
  const int64_t common = majority(task);
  std::vector<ReadingScore> scores;
  if (!task.labels_every_token()) {
    scores.push_back(score(task, split, limit, "majority class",
                           [&](const auto&, const LabelledSequence&) { return std::vector<int64_t>{common}; }));
  } else {
    const int64_t blank = task.blank_class();
    scores.push_back(score(task, split, limit, "majority class (blank everywhere)",
                           [&](const auto& w, const LabelledSequence&) { return std::vector<int64_t>(w.size(), blank); }));
    if (dynamic_cast<const CodeExecutionRfwp*>(&task)) {
      scores.push_back(score(task, split, limit, "most frequent value at every print",
                             [&](const std::vector<std::string>& w, const LabelledSequence&) {
                               std::vector<int64_t> p(w.size(), blank);
                               for (size_t i = 0; i + 2 < w.size(); ++i)
                                 if (w[i] == "print") p[i + 2] = common;
                               return p;
                             }));
    }
  }
  if (dynamic_cast<const CodeExecutionRfwp*>(&task)) {
    scores.push_back(score(task, split, limit, "skip every if",
                           [](const auto& w, const LabelledSequence&) { return run_program(w, IfRule::skip); }));
    scores.push_back(score(task, split, limit, "run every if",
                           [](const auto& w, const LabelledSequence&) { return run_program(w, IfRule::run); }));
  }
  if (dynamic_cast<const ListOpsRfwp*>(&task)) {
    for (int64_t levels = 1; levels <= 3; ++levels)
      scores.push_back(score(task, split, limit, "top " + std::to_string(levels) + " level" + (levels > 1 ? "s" : ""),
                             [&](const std::vector<std::string>& w, const LabelledSequence&) {
                               size_t i = 0;
                               return std::vector<int64_t>{evaluate_levels(w, i, 0, levels, common)};
                             }));
  }
  return scores;
}

}  // namespace loom::datasets
