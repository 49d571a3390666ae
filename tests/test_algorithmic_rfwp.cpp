// test_algorithmic_rfwp.cpp: the authors' code execution and sequential ListOps
// (datasets/code_execution_rfwp.h, datasets/listops_rfwp.h) against readers of the
// test's own, the scoring and shallow readings of datasets/task_readings.h on
// hand-written examples, the per-token classifier, and the algorithmic protocol's
// epochs, patience and resume.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "autodiff/grad_mode.h"
#include "datasets/code_execution_rfwp.h"
#include "datasets/listops_rfwp.h"
#include "datasets/task_readings.h"
#include "engine/ops.h"
#include "models/programs/algorithmic.h"
#include "models/families/sequence_classifier.h"
#include "tests/test_util.h"

namespace loom::test {

namespace {

using datasets::CodeExecutionRfwp;
using datasets::CodeExecutionRfwpConfig;
using datasets::CodeSemantics;
using datasets::LabelledSequence;
using datasets::ListOpsOperators;
using datasets::ListOpsRfwp;
using datasets::ListOpsRfwpConfig;
using datasets::Split;

constexpr Split kSplits[] = {Split::train, Split::valid, Split::test};

// ---- an interpreter of the words, written from the task's description ---------------------

struct Trace {
  std::vector<int64_t> targets;  // as the task defines them: 0 blank, else 1 + value + 8
  int64_t statements = 0, top_level_kinds[4] = {0, 0, 0, 0}, guarded_kinds[3] = {0, 0, 0};
  int64_t prints = 0, dropped_assignments = 0;
  bool reads_only_defined = true, values_in_range = true, variables_in_range = true;
  std::string first_kind, last_kind;
};

// Runs the program in `w` over `variables` variables; under `authors`, an
// assignment to a defined variable under a true if has no effect.
Trace interpret(const std::vector<std::string>& w, int64_t variables, bool authors) {
  const std::vector<std::string> names = {"x", "y", "z", "a", "b", "c", "d", "e", "f", "g"};
  std::map<std::string, int64_t> value;
  Trace t;
  size_t i = 0;
  const auto blank = [&](size_t n) { t.targets.insert(t.targets.end(), n, 0); };
  const auto check_variable = [&](const std::string& v) {
    const auto at = std::find(names.begin(), names.end(), v);
    t.variables_in_range = t.variables_in_range && at != names.end() && at - names.begin() < variables;
  };
  const auto read = [&](const std::string& v) {
    check_variable(v);
    t.reads_only_defined = t.reads_only_defined && value.count(v);
    return value[v];
  };
  // One unguarded statement; returns its kind (0 assign, 1 step, 2 print).
  const auto statement = [&](bool runs, bool guarded) -> int {
    if (w.at(i) == "print") {
      REQUIRE(w.at(i + 2) == ";");
      const int64_t v = read(w.at(i + 1));
      blank(2);
      t.targets.push_back(runs ? 1 + v + 8 : 0);
      t.prints += runs;
      i += 3;
      return 2;
    }
    if (w.at(i + 1) == "=") {
      REQUIRE(w.at(i + 3) == ";");
      const std::string& v = w.at(i);
      check_variable(v);
      const int64_t k = std::stoll(w.at(i + 2));
      CHECK((k >= 0 && k <= 9));
      const bool defined = value.count(v) > 0;
      if (runs && guarded && defined && authors) ++t.dropped_assignments;
      else if (runs) value[v] = k;
      blank(4);
      i += 4;
      return 0;
    }
    REQUIRE((w.at(i + 1) == "++" || w.at(i + 1) == "--"));
    REQUIRE(w.at(i + 2) == ";");
    int64_t& v = value[w.at(i)];
    read(w.at(i));
    if (runs) v += w.at(i + 1) == "++" ? 1 : -1;
    t.values_in_range = t.values_in_range && v >= -8 && v <= 16;
    blank(3);
    i += 3;
    return 1;
  };
  while (i < w.size()) {
    ++t.statements;
    std::string kind;
    if (w[i] == "if") {
      REQUIRE(w.at(i + 4) == ":");
      const int64_t v = read(w.at(i + 1));
      const int64_t k = std::stoll(w.at(i + 3));
      REQUIRE((w.at(i + 2) == "<" || w.at(i + 2) == ">"));
      const bool holds = w.at(i + 2) == "<" ? v < k : v > k;
      blank(5);
      i += 5;
      ++t.guarded_kinds[statement(holds, true)];
      ++t.top_level_kinds[3];
      kind = "if";
    } else {
      const int k = statement(true, false);
      ++t.top_level_kinds[k];
      kind = k == 0 ? "assign" : k == 1 ? "step" : "print";
    }
    if (t.statements == 1) t.first_kind = kind;
    t.last_kind = kind;
  }
  return t;
}

CodeExecutionRfwpConfig code_config(int64_t variables, CodeSemantics semantics) {
  CodeExecutionRfwpConfig c;
  c.variables = variables;
  c.semantics = semantics;
  c.train_size = 300;
  c.valid_size = c.test_size = 100;
  c.seed = 7;
  return c;
}

// ---- a stack machine for ListOps, written from the task's description ----------------------

struct Expression {
  int64_t value = 0, depth = 0;
  bool well_formed = true;
  int64_t max_args_seen = 0, min_args_seen = 1000, operators = 0, operator_arguments = 0, arguments = 0;
  std::set<std::string> operator_words;
};

Expression evaluate_listops(const std::vector<std::string>& words) {
  struct Frame {
    std::string op;
    std::vector<int64_t> args;
    int64_t depth = 0, nested = 0;
  };
  std::vector<Frame> stack;
  Expression e;
  bool done = false;
  for (const std::string& w : words) {
    if (done) e.well_formed = false;
    if (w[0] == '[') {
      stack.push_back({w, {}, 0, 0});
      e.operator_words.insert(w);
      ++e.operators;
    } else if (w == "]") {
      REQUIRE(!stack.empty());
      Frame f = stack.back();
      stack.pop_back();
      std::vector<int64_t> a = f.args;
      REQUIRE(!a.empty());
      int64_t v = 0;
      if (f.op == "[MIN") v = *std::min_element(a.begin(), a.end());
      else if (f.op == "[MAX") v = *std::max_element(a.begin(), a.end());
      else if (f.op == "[FIRST") v = a.front();
      else if (f.op == "[SM") {
        for (int64_t x : a) v += x;
        v %= 10;
      } else {
        std::sort(a.begin(), a.end());
        v = a.size() % 2 ? a[a.size() / 2] : (a[a.size() / 2 - 1] + a[a.size() / 2]) / 2;
      }
      e.max_args_seen = std::max<int64_t>(e.max_args_seen, a.size());
      e.min_args_seen = std::min<int64_t>(e.min_args_seen, a.size());
      const int64_t depth = f.depth + 1;
      if (stack.empty()) {
        e.value = v;
        e.depth = depth;
        done = true;
      } else {
        stack.back().args.push_back(v);
        stack.back().depth = std::max(stack.back().depth, depth);
        ++e.operator_arguments;
        ++e.arguments;
      }
    } else {
      REQUIRE((w.size() == 1 && w[0] >= '0' && w[0] <= '9'));
      if (stack.empty()) e.well_formed = false;
      else stack.back().args.push_back(w[0] - '0');
      ++e.arguments;
    }
  }
  e.well_formed = e.well_formed && done && stack.empty();
  return e;
}

}  // namespace

TEST_CASE("code execution (authors' task): every program, run by the test's interpreter, has its targets") {
  for (const CodeSemantics semantics : {CodeSemantics::authors, CodeSemantics::exact}) {
    for (const int64_t variables : {3, 5}) {
      const CodeExecutionRfwp task(code_config(variables, semantics));
      CAPTURE(variables);
      CAPTURE(datasets::semantics_name(semantics));
      int64_t kinds[4] = {0, 0, 0, 0}, guarded[3] = {0, 0, 0}, tokens = 0, prints = 0, dropped = 0, programs = 0;
      for (const Split split : kSplits) {
        for (int64_t i = 0; i < task.split_size(split); ++i) {
          const LabelledSequence e = task.example(split, i);
          const std::vector<std::string> words = task.vocabulary().decode(e.tokens);
          const Trace t = interpret(words, variables, semantics == CodeSemantics::authors);
          INFO("example ", i, " of ", datasets::split_name(split), ": ", task.vocabulary().text(e.tokens));
          REQUIRE(e.targets == t.targets);
          CHECK(e.label == e.targets.back());
          CHECK(t.statements == 100);
          CHECK(t.first_kind == "assign");
          CHECK(t.last_kind == "print");
          CHECK(e.targets.back() != 0);  // the last print is never under an if
          CHECK(t.reads_only_defined);
          CHECK(t.values_in_range);
          CHECK(t.variables_in_range);
          for (int k = 0; k < 4; ++k) kinds[k] += t.top_level_kinds[k];
          for (int k = 0; k < 3; ++k) guarded[k] += t.guarded_kinds[k];
          tokens += static_cast<int64_t>(words.size());
          prints += t.prints;
          dropped += t.dropped_assignments;
          ++programs;
        }
      }
      // The middle 98 statements are uniform over four kinds, the guarded ones over three.
      const double middle = 98.0 * programs;
      CHECK(std::abs((kinds[0] - programs) / middle - 0.25) < 0.01);
      CHECK(std::abs(kinds[1] / middle - 0.25) < 0.01);
      CHECK(std::abs((kinds[2] - programs) / middle - 0.25) < 0.01);
      CHECK(std::abs(kinds[3] / middle - 0.25) < 0.01);
      const double guarded_total = guarded[0] + guarded[1] + guarded[2];
      for (int k = 0; k < 3; ++k) CHECK(std::abs(guarded[k] / guarded_total - 1.0 / 3.0) < 0.02);
      // About 460 tokens and 25–29 carried-out prints per program.
      CHECK(std::abs(static_cast<double>(tokens) / programs - 458.3) < 6.0);
      CHECK(static_cast<double>(prints) / programs > 25.0);
      CHECK(static_cast<double>(prints) / programs < 30.0);
      // The two semantics differ: the authors' drops assignments.
      if (semantics == CodeSemantics::authors) CHECK(dropped > programs);
      else CHECK(dropped == 0);
    }
  }
}

TEST_CASE("code execution (authors' task): the interpreter tells the two semantics apart") {
  // The authors' programs, run exactly, disagree somewhere: the dropped assignments matter.
  const CodeExecutionRfwp task(code_config(3, CodeSemantics::authors));
  int64_t differing = 0;
  for (int64_t i = 0; i < 100; ++i) {
    const LabelledSequence e = task.example(Split::valid, i);
    differing += interpret(task.vocabulary().decode(e.tokens), 3, false).targets != e.targets;
  }
  CHECK(differing > 10);
}

TEST_CASE("listops (authors' task): every expression, evaluated by a stack machine, has its label and depth") {
  for (const ListOpsOperators operators : {ListOpsOperators::min_max_first, ListOpsOperators::min_max_med_sm}) {
    for (const int64_t depth : {1, 3, 10, 15}) {
      ListOpsRfwpConfig c;
      c.depth = depth;
      c.operators = operators;
      c.train_size = depth >= 10 ? 100 : 300;
      c.valid_size = c.test_size = 50;
      const ListOpsRfwp task(c);
      CAPTURE(depth);
      CAPTURE(datasets::operators_name(operators));
      std::set<std::string> seen;
      int64_t operator_arguments = 0, arguments = 0;
      for (const Split split : kSplits) {
        for (int64_t i = 0; i < task.split_size(split); ++i) {
          const LabelledSequence e = task.example(split, i);
          const std::vector<std::string> words = task.vocabulary().decode(e.tokens);
          INFO(task.vocabulary().text(e.tokens));
          const Expression x = evaluate_listops(words);
          REQUIRE(x.well_formed);
          CHECK(words.front()[0] == '[');  // the root is an operator
          CHECK(x.value == e.label);
          CHECK(x.depth == depth);
          CHECK(x.min_args_seen >= 2);
          CHECK(x.max_args_seen <= 5);
          CHECK(e.targets.empty());
          seen.insert(x.operator_words.begin(), x.operator_words.end());
          operator_arguments += x.operator_arguments;
          arguments += x.arguments;
        }
      }
      const std::set<std::string> expected = operators == ListOpsOperators::min_max_first
                                                 ? std::set<std::string>{"[MIN", "[MAX", "[FIRST"}
                                                 : std::set<std::string>{"[MIN", "[MAX", "[MED", "[SM"};
      CHECK(seen == expected);
      // Depth 1 has no operator below the root; deeper trees hold operators where a
      // quarter of the arguments are, plus their spine.
      if (depth == 1) CHECK(operator_arguments == 0);
      if (depth == 3) CHECK(std::abs(static_cast<double>(operator_arguments) / arguments - 0.27) < 0.06);
    }
  }
}

TEST_CASE("authors' tasks: examples are pure functions of (config, seed, split, index)") {
  const CodeExecutionRfwp code(code_config(5, CodeSemantics::authors));
  CHECK(code.example(Split::train, 3).tokens == code.example(Split::train, 3).tokens);
  CHECK(code.example(Split::train, 3).tokens != code.example(Split::valid, 3).tokens);
  CHECK(code.example(Split::train, 3).tokens != code.example(Split::train, 4).tokens);
  ListOpsRfwpConfig c;
  c.train_size = 10;
  const ListOpsRfwp listops(c);
  CHECK(listops.example(Split::test, 2).tokens == listops.example(Split::test, 2).tokens);
  CHECK(listops.example(Split::test, 2).tokens != listops.example(Split::test, 3).tokens);
}

TEST_CASE("authors' tasks: bad configs are errors that name the field") {
  CodeExecutionRfwpConfig c;
  c.variables = 11;
  CHECK_THROWS_WITH_AS(CodeExecutionRfwp{c}, doctest::Contains("variables must be in [1, 10], got 11"), Error);
  c = {};
  c.statements = 1;
  CHECK_THROWS_WITH_AS(CodeExecutionRfwp{c}, doctest::Contains("statements must be at least 2"), Error);
  ListOpsRfwpConfig l;
  l.depth = 20;
  CHECK_THROWS_WITH_AS(ListOpsRfwp{l}, doctest::Contains("depth must be in [1, 19], got 20"), Error);
  l = {};
  l.max_args = 1;
  CHECK_THROWS_WITH_AS(ListOpsRfwp{l}, doctest::Contains("max_args must be at least 2"), Error);
  l = {};
  CHECK_THROWS_WITH_AS(ListOpsRfwp{l}.example(Split::valid, 1000), doctest::Contains("which has 1000"), Error);

  const auto parse = [](const std::string& task, const std::string& training = "{}") {
    return models::parse_algorithmic_config(
        R"({"out_dir": "x", "task": )" + task + R"(, "model": {"layer": "lstm", "d_model": 8, "layers": 1}, "training": )" +
            training + "}",
        "run.json");
  };
  CHECK_THROWS_WITH_AS(parse(R"({"kind": "code_execution_rfwp", "semantics": "python"})"),
                       doctest::Contains("run.json.task.semantics: expected \"authors\" or \"exact\""), Error);
  CHECK_THROWS_WITH_AS(parse(R"({"kind": "listops_rfwp", "operators": "min_max"})"),
                       doctest::Contains("run.json.task.operators: expected"), Error);
  CHECK_THROWS_WITH_AS(parse(R"({"kind": "listops_rfwp", "max_depth": 3})"),
                       doctest::Contains("run.json.task.max_depth: unknown key"), Error);
  CHECK_THROWS_WITH_AS(parse(R"({"kind": "listops_rfwp"})", R"({"steps": 10, "epochs": 2})"),
                       doctest::Contains("give steps or epochs, not both"), Error);
  CHECK_THROWS_WITH_AS(parse(R"({"kind": "listops_rfwp"})", R"({"patience": -1})"),
                       doctest::Contains("run.json.training.patience: must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(parse(R"({"kind": "listops_rfwp"})", R"({"adam_beta2": 1.0})"),
                       doctest::Contains("run.json.training.adam_beta2: must be in [0, 1)"), Error);
  // With epochs, one validation per epoch: 10,000 / 64 → 157 steps.
  const models::AlgorithmicConfig ok = parse(R"({"kind": "listops_rfwp"})", R"({"epochs": 3})");
  CHECK(ok.training.eval_interval == 157);
  CHECK(models::total_steps(ok.training, 10000) == 3 * 157);
}

// ---- scoring and readings on hand-written examples -----------------------------------------

namespace {

std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> words;
  std::string w;
  for (char ch : text + " ") {
    if (ch != ' ') w += ch;
    else if (!w.empty()) words.push_back(w), w.clear();
  }
  return words;
}

// A code execution task whose examples are given programs (the readings only look
// at the words and targets).
class GivenPrograms : public CodeExecutionRfwp {
 public:
  explicit GivenPrograms(std::vector<std::string> programs)
      : CodeExecutionRfwp(given_config(programs.size())), programs_(std::move(programs)) {}
  LabelledSequence example(Split, int64_t index) const override {
    LabelledSequence e;
    const std::vector<std::string> words = split_words(programs_.at(index));
    e.tokens = vocabulary().encode(words);
    e.targets = interpret(words, 10, true).targets;
    e.label = e.targets.back();
    return e;
  }

 private:
  static CodeExecutionRfwpConfig given_config(size_t n) {
    CodeExecutionRfwpConfig c;
    c.train_size = c.valid_size = c.test_size = static_cast<int64_t>(n);
    return c;
  }
  std::vector<std::string> programs_;
};

const datasets::ReadingScore& reading(const std::vector<datasets::ReadingScore>& scores, const std::string& name) {
  for (const auto& s : scores)
    if (s.name == name) return s;
  FAIL("no reading named ", name);
  return scores.front();
}

}  // namespace

TEST_CASE("task readings: the scores of hand-written programs") {
  // Program 0: the if is false, so "skip every if" is right and "run every if" is not.
  // Program 1: the if is true. Program 2: no if at all, both readings are right.
  const GivenPrograms task({"x = 3 ; if x > 5 : x ++ ; print x ;",        // prints 3
                            "x = 3 ; if x < 5 : print x ; x -- ; print x ;",  // prints 3, then 2
                            "y = 9 ; y ++ ; print y ;"});                   // prints 10
  const auto scores = datasets::score_readings(task, Split::test);
  const auto& skip = reading(scores, "skip every if");
  const auto& run = reading(scores, "run every if");
  CHECK(skip.accuracy == doctest::Approx(2.0 / 3.0));  // wrong on program 1 (misses the guarded print)
  CHECK(skip.output_accuracy == doctest::Approx(3.0 / 4.0));  // 4 printed values, the guarded one missed
  CHECK(run.accuracy == doctest::Approx(2.0 / 3.0));   // wrong on program 0 (prints 4)
  CHECK(run.output_accuracy == doctest::Approx(3.0 / 4.0));
  const auto& blank = reading(scores, "majority class (blank everywhere)");
  CHECK(blank.accuracy == 0.0);
  CHECK(blank.output_accuracy == 0.0);
  // The most frequent printed value in the "training split" (the same programs) is 3.
  const auto& frequent = reading(scores, "most frequent value at every print");
  CHECK(frequent.output_accuracy == doctest::Approx(2.0 / 4.0));
}

namespace {

class GivenTrees : public ListOpsRfwp {
 public:
  GivenTrees(std::vector<std::string> trees, std::vector<int64_t> labels)
      : ListOpsRfwp(given_config(trees.size())), trees_(std::move(trees)), labels_(std::move(labels)) {}
  LabelledSequence example(Split, int64_t index) const override {
    return {vocabulary().encode(split_words(trees_.at(index))), labels_.at(index), {}};
  }

 private:
  static ListOpsRfwpConfig given_config(size_t n) {
    ListOpsRfwpConfig c;
    c.train_size = c.valid_size = c.test_size = static_cast<int64_t>(n);
    return c;
  }
  std::vector<std::string> trees_;
  std::vector<int64_t> labels_;
};

}  // namespace

TEST_CASE("task readings: ListOps evaluated down to k levels, the majority label guessed below") {
  const GivenTrees task({"[MAX 1 [MIN 9 [MAX 8 7 ] ] ]",  // = 8
                         "[FIRST [MIN 2 3 ] 5 ]",          // = 2
                         "[MIN 2 [MAX 3 4 ] ]"},           // = 2
                        {8, 2, 2});
  const auto scores = datasets::score_readings(task, Split::test);
  // Majority label of the "training split": 2 (twice).
  CHECK(reading(scores, "majority class").accuracy == doctest::Approx(2.0 / 3.0));
  // Top 1: tree 0 → max(1, guess 2) = 2 (label 8: wrong); tree 1 → first(guess 2) = 2 (right); tree 2 → min(2, 2) = 2.
  CHECK(reading(scores, "top 1 level").accuracy == doctest::Approx(2.0 / 3.0));
  // Top 2: tree 0 → max(1, min(9, guess 2)) = 2 (wrong).
  CHECK(reading(scores, "top 2 levels").accuracy == doctest::Approx(2.0 / 3.0));
  // Top 3 evaluates tree 0 fully: max(1, min(9, max(8, 7))) = 8.
  CHECK(reading(scores, "top 3 levels").accuracy == 1.0);
}

TEST_CASE("scorer: program accuracy counts every position, output accuracy the non-blank ones") {
  datasets::Scorer s(0);
  s.add_sequence({0, 0, 5, 0, 7}, {0, 0, 5, 0, 7});  // all right
  s.add_sequence({0, 1, 5, 0, 6}, {0, 0, 5, 0, 7});  // a blank wrong and an output wrong
  s.add_sequence({0, 0, 5}, {0, 3, 5});              // an output predicted blank
  CHECK(s.accuracy() == doctest::Approx(1.0 / 3.0));
  CHECK(s.output_accuracy() == doctest::Approx(4.0 / 6.0));
  CHECK(s.outputs() == 6);
  CHECK_THROWS_AS(s.add_sequence({0}, {0, 1}), Error);
  datasets::Scorer labels;
  labels.add_label(3, 3);
  labels.add_label(2, 3);
  CHECK(labels.accuracy() == 0.5);
  CHECK(std::isnan(labels.output_accuracy()));
}

// ---- the classifier labelling every token ----------------------------------------------------

TEST_CASE("sequence classifier: the logits at every token are those of the prefix ending there") {
  for (const std::string layer : {"lstm", "delta_net", "delta_rnn", "rdn"}) {
    CAPTURE(layer);
    models::SequenceClassifierConfig c;
    c.vocab = 12;
    c.classes = 5;
    c.layer = layer;
    c.d_model = 8;
    c.layers = 2;
    c.heads = 2;
    c.d_ff = 12;
    models::SequenceClassifier model(c);
    model.eval();
    NoGradGuard no_grad;
    const std::vector<int64_t> ids = {3, 1, 4, 1, 5, 9, 2, 6};
    const int64_t L = static_cast<int64_t>(ids.size());
    const Tensor tokens = Tensor::from_vector(ids, {L, 1});
    const std::vector<float> every = model.forward_every_token(tokens).contiguous().to_vector<float>();
    for (int64_t t = 0; t < L; ++t) {
      const Tensor prefix = Tensor::from_vector(std::vector<int64_t>(ids.begin(), ids.begin() + t + 1), {t + 1, 1});
      const std::vector<float> at = model.forward(prefix, Tensor::from_vector(std::vector<int64_t>{t + 1}, {1}))
                                        .to_vector<float>();
      for (int64_t k = 0; k < 5; ++k) CHECK(every[t * 5 + k] == doctest::Approx(at[k]).epsilon(1e-5));
    }
  }
}

TEST_CASE("sequence classifier: the per-token loss is the mean over real tokens, padding ignored") {
  CodeExecutionRfwpConfig cc = code_config(3, CodeSemantics::authors);
  cc.statements = 6;
  const CodeExecutionRfwp task(cc);
  models::SequenceClassifierConfig c;
  c.vocab = task.vocabulary().size();
  c.classes = task.num_classes();
  c.layer = "delta_net";
  c.d_model = 8;
  c.layers = 1;
  c.heads = 2;
  c.d_ff = 8;
  models::SequenceClassifier model(c);
  NoGradGuard no_grad;
  std::vector<LabelledSequence> examples;
  for (int64_t i = 0; i < 4; ++i) examples.push_back(task.example(Split::train, i));
  const datasets::ClassificationBatch batch = datasets::make_batch(examples);
  const double together = models::classify_batch(model, models::to_tensors(batch), true).loss.item();
  // Each sequence alone (no padding), weighted by its length.
  double sum = 0.0, tokens = 0.0;
  for (const LabelledSequence& e : examples) {
    const datasets::ClassificationBatch one = datasets::make_batch({e});
    const double n = static_cast<double>(e.tokens.size());
    sum += models::classify_batch(model, models::to_tensors(one), true).loss.item() * n;
    tokens += n;
  }
  CHECK(together == doctest::Approx(sum / tokens).epsilon(1e-5));
  CHECK(batch.targets.size() == batch.tokens.size());
  CHECK(std::count(batch.targets.begin(), batch.targets.end(), datasets::kNoTarget) ==
        static_cast<int64_t>(batch.tokens.size()) - static_cast<int64_t>(tokens));
}

// ---- the protocol: epochs, patience, resume --------------------------------------------------

namespace {

struct SmallRun {
  CodeExecutionRfwp task;
  models::SequenceClassifierConfig model_config;
  models::AlgorithmicTraining training;
  SmallRun() : task(small_task()) {
    model_config.vocab = task.vocabulary().size();
    model_config.classes = task.num_classes();
    model_config.layer = "delta_net";
    model_config.d_model = 8;
    model_config.layers = 1;
    model_config.heads = 2;
    model_config.d_ff = 8;
    model_config.dropout = 0.1;  // so that the resumed run must also restore the dropout stream
    training.epochs = 3;
    training.batch_size = 13;  // 40 = 3 · 13 + 1: the last batch of each epoch holds one example
    training.lr = 1e-2;
    training.eval_interval = 2;
    training.log_interval = 100;
  }
  static CodeExecutionRfwpConfig small_task() {
    CodeExecutionRfwpConfig c = code_config(3, CodeSemantics::authors);
    c.statements = 5;
    c.train_size = 40;
    c.valid_size = c.test_size = 20;
    return c;
  }
};

std::vector<float> flat_parameters(const models::SequenceClassifier& model) {
  std::vector<float> all;
  for (const Tensor& p : model.parameters()) {
    const std::vector<float> v = p.contiguous().to_vector<float>();
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

}  // namespace

TEST_CASE("algorithmic protocol: a run stopped and resumed from its state ends exactly as one straight run") {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / "loom_test_algorithmic_resume";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  SmallRun s;
  CHECK(models::steps_per_epoch(40, 13) == 4);

  models::SequenceClassifier straight(s.model_config);
  const models::AlgorithmicRun whole = models::train_algorithmic(straight, s.task, s.training, 3);
  CHECK(whole.steps == 12);
  CHECK(whole.history.size() == 6);

  models::RunPersistence persist;
  persist.state_path = (dir / "state.safetensors").string();
  persist.identity = "test run";
  models::SequenceClassifier first(s.model_config);
  models::AlgorithmicTraining part = s.training;
  part.log_interval = 5;
  persist.save_interval = 1;
  // Killed after step 5, in the middle of epoch 2 and between two evaluations: its
  // state was saved after step 4 (and, if the save came first, step 5).
  CHECK_THROWS_WITH(models::train_algorithmic(first, s.task, part, 3,
                                              [](const std::string& line) {
                                                if (line.rfind("step      5", 0) == 0) throw std::runtime_error("killed");
                                              },
                                              persist),
                    "killed");

  models::SequenceClassifier second(s.model_config);  // fresh parameters, replaced by the state's
  persist.resume = true;
  const models::AlgorithmicRun resumed = models::train_algorithmic(second, s.task, s.training, 3, {}, persist);
  CHECK(resumed.steps == 12);
  CHECK(flat_parameters(second) == flat_parameters(straight));  // bit for bit: the best step's parameters
  CHECK(resumed.best_step == whole.best_step);
  CHECK(resumed.test.accuracy == whole.test.accuracy);
  REQUIRE(resumed.history.size() == whole.history.size());
  for (size_t i = 0; i < whole.history.size(); ++i) {
    CHECK(resumed.history[i].step == whole.history[i].step);
    CHECK(resumed.history[i].valid_loss == whole.history[i].valid_loss);
  }

  // Another identity is refused, naming both.
  persist.identity = "another run";
  models::SequenceClassifier third(s.model_config);
  CHECK_THROWS_WITH_AS(models::train_algorithmic(third, s.task, s.training, 3, {}, persist),
                       doctest::Contains("started with other settings"), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("algorithmic protocol: patience stops a run whose accuracy and loss no longer improve") {
  SmallRun s;
  s.task = CodeExecutionRfwp(code_config(3, CodeSemantics::authors));  // 100 statements: no program ever right
  s.model_config.dropout = 0.0;
  s.training.epochs = 0;
  s.training.steps = 50;
  s.training.batch_size = 4;
  s.training.eval_interval = 1;
  s.training.patience = 3;
  SUBCASE("a rate too small to move a float32 parameter: nothing changes after the first step") {
    s.training.lr = 1e-12;
    models::SequenceClassifier model(s.model_config);
    std::vector<std::string> lines;
    const models::AlgorithmicRun run =
        models::train_algorithmic(model, s.task, s.training, 1, [&](const std::string& l) { lines.push_back(l); });
    // The first evaluation is the best (0 % beats nothing); the next three match it
    // and their loss is no lower.
    CHECK(run.best_step == 1);
    CHECK(run.steps == 4);
    CHECK(run.stopped_early);
    CHECK(lines.back().find("no better validation accuracy or loss in 3 evaluations") != std::string::npos);
  }
  SUBCASE("a falling validation loss keeps a run going while its accuracy stays 0") {
    s.training.lr = 3e-3;
    s.training.steps = 8;
    models::SequenceClassifier model(s.model_config);
    const models::AlgorithmicRun run = models::train_algorithmic(model, s.task, s.training, 1);
    REQUIRE(run.history.size() == 8);
    int64_t falling = 0;
    for (size_t i = 1; i < run.history.size(); ++i) {
      CHECK(run.history[i].valid_accuracy == 0.0);
      falling += run.history[i].valid_loss < run.history[i - 1].valid_loss;
    }
    CHECK(falling == 7);  // the loss fell at every step
    CHECK(!run.stopped_early);
  }
}

}  // namespace loom::test

namespace loom::test {
namespace {

// A run directory with a metrics.jsonl of two validations.
void write_history(const std::string& dir, const std::string& run, bool per_output) {
  std::filesystem::create_directories(dir + "/" + run);
  std::ofstream out(dir + "/" + run + "/metrics.jsonl");
  for (int epoch = 1; epoch <= 2; ++epoch) {
    out << "{\"step\":" << 10 * epoch << ",\"epoch\":" << epoch << ",\"valid_accuracy\":0.0";
    if (per_output) out << ",\"valid_output_accuracy\":0." << 2 * epoch;
    out << "}\n";
  }
}

}  // namespace

TEST_CASE("algorithmic --chart: one chart of the runs of two sweep directories, prints in a second panel") {
  const std::string program = std::string(LOOM_BUILD_ROOT) + "/examples/algorithmic";
  REQUIRE_MESSAGE(std::filesystem::exists(program), program, " is not built (meson test builds it)");
  const std::string config = std::string(LOOM_SOURCE_ROOT) + "/examples/configs/code_execution_quick.json";
  TempDir dir("algorithmic-chart");
  const std::string main_sweep = dir.file("main"), side_sweep = dir.file("side"), svg = dir.file("all.svg");
  write_history(main_sweep, "delta_net-seed1", true);
  write_history(side_sweep, "rdn-seed1", true);
  std::filesystem::create_directories(side_sweep + "/lstm-seed1");  // no history yet: not drawn

  const CommandOutput drawn = run_command(program + " " + config + " --out " + main_sweep + " --chart-also " +
                                          side_sweep + " --chart " + svg + " 2>&1");
  REQUIRE_MESSAGE(drawn.status == 0, drawn.text);
  CHECK(drawn.text.find("(2 runs)") != std::string::npos);
  const std::string chart = read_bytes(svg);
  CHECK(chart.find(">delta_net-seed1<") != std::string::npos);
  CHECK(chart.find(">rdn-seed1<") != std::string::npos);
  CHECK(chart.find(">lstm-seed1<") == std::string::npos);
  CHECK(chart.find("validation accuracy per output") != std::string::npos);
  CHECK(std::filesystem::is_empty(dir.file("side") + "/lstm-seed1"));  // --chart writes nowhere else

  // Without per-output figures (ListOps), one panel.
  const std::string listops = dir.file("listops");
  write_history(listops, "rdn-seed1", false);
  REQUIRE(run_command(program + " " + config + " --out " + listops + " --chart " + svg + " 2>&1").status == 0);
  CHECK(read_bytes(svg).find("validation accuracy per output") == std::string::npos);

  // A directory that is not there is named, and nothing is written.
  std::filesystem::remove(svg);
  const CommandOutput refused = run_command(program + " " + config + " --out " + main_sweep + " --chart-also " +
                                            dir.file("absent") + " --chart " + svg + " 2>&1");
  CHECK(refused.status == 1);
  CHECK(refused.text.find("--chart-also: '" + dir.file("absent") + "' is not a directory") != std::string::npos);
  CHECK(!std::filesystem::exists(svg));
}

}  // namespace loom::test
