// test_algorithmic.cpp: the algorithmic tasks (datasets/code_execution.h,
// datasets/listops.h) and their classifier (models/families/sequence_classifier.h).
//
// The generators are checked by independent readers written here: an interpreter
// that parses a generated program back from its words and runs it, and a stack
// evaluator for ListOps; both must agree with every stored label. The LSTM is
// checked against a naive double loop, the classifier's float64 gradients against
// finite differences.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "autodiff/grad_mode.h"
#include "autodiff/gradcheck.h"
#include "datasets/code_execution.h"
#include "datasets/listops.h"
#include "engine/ops.h"
#include "models/programs/algorithmic.h"
#include "models/blocks/optim.h"
#include "models/families/sequence_classifier.h"
#include "tests/test_util.h"

namespace loom::test {

namespace {

using datasets::CodeExecution;
using datasets::CodeExecutionConfig;
using datasets::LabelledSequence;
using datasets::ListOps;
using datasets::ListOpsConfig;
using datasets::Split;

constexpr Split kSplits[] = {Split::train, Split::valid, Split::test};

// ---- an independent interpreter of the code execution programs ----------------------------

struct Program {
  std::vector<std::string> words;
  size_t at = 0;
  std::map<std::string, int64_t> vars;
  bool in_range = true;  // every value a digit

  const std::string& next() {
    REQUIRE(at < words.size());
    return words[at++];
  }
  void expect(const std::string& w) {
    const std::string& got = next();
    REQUIRE_MESSAGE(got == w, "expected '", w, "' at word ", at - 1, ", got '", got, "'");
  }
  int64_t number(const std::string& w) {
    REQUIRE((w.size() == 1 && w[0] >= '0' && w[0] <= '9'));
    return w[0] - '0';
  }
  int64_t value_of(const std::string& name) {
    REQUIRE_MESSAGE(vars.count(name), "variable '", name, "' read before it is assigned");
    return vars[name];
  }
  // x = N ;  or  x = y + N ;  or  x = y - N ;  Returns (x, the value), assigning nothing.
  std::pair<std::string, int64_t> assignment() {
    const std::string target = next();
    expect("=");
    const std::string first = next();
    int64_t value;
    if (first[0] >= '0' && first[0] <= '9') {
      value = number(first);
    } else {
      const std::string op = next();
      REQUIRE((op == "+" || op == "-"));
      const int64_t k = number(next());
      value = op == "+" ? value_of(first) + k : value_of(first) - k;
    }
    expect(";");
    in_range = in_range && value >= 0 && value <= 9;
    return {target, value};
  }
  // Runs the whole program and returns the printed value.
  int64_t run() {
    while (true) {
      const std::string& w = words.at(at);
      if (w == "print") {
        ++at;
        const int64_t v = value_of(next());
        REQUIRE(at == words.size());
        return v;
      }
      if (w == "if") {
        ++at;
        const int64_t tested = value_of(next());
        const std::string cmp = next();
        REQUIRE((cmp == "<" || cmp == ">"));
        const int64_t k = number(next());
        expect(":");
        const bool taken = cmp == "<" ? tested < k : tested > k;
        // Both branches read the state before the statement.
        const auto [then_target, then_value] = assignment();
        if (at < words.size() && words[at] == "else") {
          ++at;
          expect(":");
          const auto [else_target, else_value] = assignment();
          REQUIRE(else_target == then_target);
          if (!taken) vars[else_target] = else_value;
        }
        if (taken) vars[then_target] = then_value;
      } else {
        const auto [target, value] = assignment();
        vars[target] = value;
      }
    }
  }
};

// ---- an independent evaluator of ListOps ---------------------------------------------------------

struct ListOpsValue {
  int64_t value = 0, depth = 0;
};

ListOpsValue evaluate_listops(const std::vector<std::string>& words) {
  struct Frame {
    std::string op;
    std::vector<int64_t> args;
    int64_t depth = 0;
  };
  std::vector<Frame> stack{{"root", {}, 0}};
  for (const std::string& w : words) {
    if (w.size() > 1 && w[0] == '[') {
      stack.push_back({w.substr(1), {}, 0});
    } else if (w == "]") {
      REQUIRE(stack.size() >= 2);
      Frame f = stack.back();
      stack.pop_back();
      REQUIRE(f.args.size() >= 2);
      std::vector<int64_t> a = f.args;
      std::sort(a.begin(), a.end());
      int64_t v = 0;
      if (f.op == "MIN") v = a.front();
      else if (f.op == "MAX") v = a.back();
      else if (f.op == "MED") v = static_cast<int64_t>(a.size() % 2 ? a[a.size() / 2] : std::floor((a[a.size() / 2 - 1] + a[a.size() / 2]) / 2.0));
      else if (f.op == "SM") {
        for (int64_t x : a) v += x;
        v %= 10;
      } else FAIL("unknown operator " << f.op);
      stack.back().args.push_back(v);
      stack.back().depth = std::max(stack.back().depth, f.depth + 1);
    } else {
      REQUIRE((w.size() == 1 && w[0] >= '0' && w[0] <= '9'));
      stack.back().args.push_back(w[0] - '0');
    }
  }
  REQUIRE(stack.size() == 1);
  REQUIRE(stack[0].args.size() == 1);
  return {stack[0].args[0], stack[0].depth};
}

bool same(const LabelledSequence& a, const LabelledSequence& b) { return a.tokens == b.tokens && a.label == b.label; }

std::vector<double> class_frequencies(const datasets::SequenceTask& task, Split split, int64_t n) {
  std::vector<double> f(task.num_classes(), 0.0);
  for (int64_t i = 0; i < n; ++i) f[task.example(split, i).label] += 1.0 / static_cast<double>(n);
  return f;
}

}  // namespace

// ---- datasets -------------------------------------------------------------------------------------

TEST_CASE("code execution: every program, parsed back from its words and run, prints its label") {
  for (int64_t variables : {1, 3, 5}) {
    CodeExecutionConfig c;
    c.variables = variables;
    c.statements = 12;
    c.train_size = c.valid_size = c.test_size = 400;
    c.seed = 7;
    const CodeExecution task(c);
    for (Split split : kSplits)
      for (int64_t i = 0; i < 400; ++i) {
        const LabelledSequence e = task.example(split, i);
        Program p{task.vocabulary().decode(e.tokens)};
        CAPTURE(task.vocabulary().text(e.tokens));
        // The initial assignments name the variables a, b, ... in order, then S statements.
        for (int64_t v = 0; v < variables; ++v) CHECK(p.words[4 * v] == std::string(1, char('a' + v)));
        CHECK(p.run() == e.label);
        CHECK(p.in_range);
        // Every statement ends in ';', an if-else in two.
        CHECK(std::count(p.words.begin(), p.words.end(), ";") - std::count(p.words.begin(), p.words.end(), "else") ==
              variables + 12);
      }
  }
}

TEST_CASE("listops: every expression, evaluated by a stack machine, has its label and a depth within bounds") {
  for (auto [min_depth, max_depth] : {std::pair<int64_t, int64_t>{10, 10}, {15, 15}, {1, 6}}) {
    ListOpsConfig c;
    c.min_depth = min_depth;
    c.max_depth = max_depth;
    c.train_size = c.valid_size = c.test_size = 300;
    c.seed = 3;
    const ListOps task(c);
    std::map<int64_t, int64_t> depths;
    for (Split split : kSplits)
      for (int64_t i = 0; i < 300; ++i) {
        const LabelledSequence e = task.example(split, i);
        CAPTURE(task.vocabulary().text(e.tokens));
        const ListOpsValue v = evaluate_listops(task.vocabulary().decode(e.tokens));
        CHECK(v.value == e.label);
        CHECK(v.depth >= min_depth);
        CHECK(v.depth <= max_depth);
        CHECK(static_cast<int64_t>(e.tokens.size()) <= c.max_length);
        ++depths[v.depth];
      }
    if (min_depth < max_depth) CHECK(depths.size() > 1);  // the depth varies when it may
  }
  // The median of an even count is the floor of the middle pair's mean (NumPy's int(np.median)).
  CHECK(evaluate_listops({"[MED", "1", "4", "]"}).value == 2);
  CHECK(evaluate_listops({"[SM", "9", "[MAX", "2", "8", "]", "]"}).value == 7);
}

TEST_CASE("algorithmic tasks: examples are pure functions of (config, seed, split, index)") {
  CodeExecutionConfig c;
  c.seed = 11;
  const CodeExecution a(c), b(c);
  ListOpsConfig l;
  l.seed = 11;
  const ListOps la(l), lb(l);
  for (Split split : kSplits)
    for (int64_t i : {0, 1, 999}) {
      CHECK(same(a.example(split, i), b.example(split, i)));
      CHECK(same(la.example(split, i), lb.example(split, i)));
    }
  // Asking in another order gives the same examples.
  CHECK(same(a.example(Split::train, 5), CodeExecution(c).example(Split::train, 5)));
  // Splits and seeds give different data.
  int64_t differing_splits = 0, differing_seeds = 0;
  c.seed = 12;
  l.seed = 12;
  const CodeExecution other(c);
  const ListOps lother(l);
  for (int64_t i = 0; i < 50; ++i) {
    differing_splits += !same(a.example(Split::train, i), a.example(Split::test, i));
    differing_splits += !same(la.example(Split::train, i), la.example(Split::valid, i));
    differing_seeds += !same(a.example(Split::train, i), other.example(Split::train, i));
    differing_seeds += !same(la.example(Split::train, i), lother.example(Split::train, i));
  }
  CHECK(differing_splits == 100);
  CHECK(differing_seeds == 100);
  // A fixed example, so that a change to the generator (and so to every data set) is noticed.
  CodeExecutionConfig small;
  small.variables = 2;
  small.statements = 2;
  small.seed = 1;
  const CodeExecution fixed(small);
  const LabelledSequence e = fixed.example(Split::train, 0);
  CHECK(fixed.vocabulary().text(e.tokens) == "a = 5 ; b = 8 ; a = b + 1 ; a = a - 6 ; print a");
  CHECK(e.label == 3);
}

TEST_CASE("algorithmic tasks: the classes are balanced enough to learn") {
  CodeExecutionConfig c;
  c.train_size = 3000;
  const std::vector<double> code = class_frequencies(CodeExecution(c), Split::train, 3000);
  for (size_t k = 0; k < code.size(); ++k) {
    CAPTURE(k);
    CHECK(code[k] > 0.04);  // uniform would be 0.1
    CHECK(code[k] < 0.2);
  }
  for (int64_t depth : {10, 15}) {
    ListOpsConfig l;
    l.min_depth = l.max_depth = depth;
    l.train_size = 3000;
    const std::vector<double> lo = class_frequencies(ListOps(l), Split::train, 3000);
    for (size_t k = 0; k < lo.size(); ++k) {
      CAPTURE(depth);
      CAPTURE(k);
      CHECK(lo[k] > 0.02);
      CHECK(lo[k] < 0.35);
    }
  }
}

TEST_CASE("algorithmic tasks: padded batches are sequence-first with the lengths and labels") {
  const datasets::ClassificationBatch b = datasets::make_batch({{{5, 6, 7}, 2}, {{8}, 9}});
  CHECK(b.length == 3);
  CHECK(b.batch == 2);
  CHECK(b.tokens == std::vector<int64_t>{5, 8, 6, 0, 7, 0});
  CHECK(b.lengths == std::vector<int64_t>{3, 1});
  CHECK(b.labels == std::vector<int64_t>{2, 9});
  // An epoch's order is a permutation, the same for the same (seed, epoch).
  std::vector<int64_t> order = datasets::epoch_order(10, 4, 2);
  CHECK(order == datasets::epoch_order(10, 4, 2));
  CHECK(order != datasets::epoch_order(10, 4, 3));
  std::sort(order.begin(), order.end());
  for (int64_t i = 0; i < 10; ++i) CHECK(order[i] == i);
}

TEST_CASE("algorithmic tasks: bad configs and requests are errors that name the problem") {
  CodeExecutionConfig c;
  c.variables = 6;
  check_mentions(error_of([&] { CodeExecution{c}; }), {"variables", "6"});
  c = {};
  c.statements = 0;
  check_mentions(error_of([&] { CodeExecution{c}; }), {"statements"});
  c = {};
  c.test_size = 0;
  check_mentions(error_of([&] { CodeExecution{c}; }), {"test_size"});
  c = {};
  check_mentions(error_of([&] { CodeExecution(c).example(Split::valid, 1000); }), {"1000", "valid"});
  ListOpsConfig l;
  l.min_depth = 11;
  check_mentions(error_of([&] { ListOps{l}; }), {"min_depth", "11"});
  l = {};
  l.max_args = 1;
  check_mentions(error_of([&] { ListOps{l}; }), {"max_args"});
  l = {};
  l.operation_percent = 100;
  check_mentions(error_of([&] { ListOps{l}; }), {"operation_percent"});
  l = {};
  l.max_length = 20;
  check_mentions(error_of([&] { ListOps{l}; }), {"max_length", "20"});
  // A length that admits the spine but (almost) never a whole tree: redraws give up with a hint.
  l = {};
  l.min_depth = l.max_depth = 10;
  l.max_args = 5;
  l.operation_percent = 90;
  l.max_length = 31;
  check_mentions(error_of([&] { ListOps(l).example(Split::train, 0); }), {"max_length", "31"});
  check_mentions(error_of([&] { datasets::make_batch({}); }), {"no examples"});
  check_mentions(error_of([&] { datasets::make_batch({{{}, 1}}); }), {"example 0", "no tokens"});
  check_mentions(error_of([&] { datasets::Vocabulary({"<pad>", "x", "x"}); }), {"'x'", "twice"});
  check_mentions(error_of([&] { CodeExecution(CodeExecutionConfig{}).vocabulary().id("while"); }), {"'while'"});
}

// ---- the classifier ----------------------------------------------------------------------------------

namespace {

double sigmoid_ref(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// nn.LSTM's equations, one scalar at a time.
std::vector<double> naive_lstm(const std::vector<double>& x, int64_t L, int64_t B, int64_t in, int64_t H,
                               const std::vector<double>& w_ih, const std::vector<double>& w_hh,
                               const std::vector<double>& b_ih, const std::vector<double>& b_hh) {
  std::vector<double> out(L * B * H);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> h(H, 0.0), c(H, 0.0);
    for (int64_t t = 0; t < L; ++t) {
      std::vector<double> gates(4 * H);
      for (int64_t r = 0; r < 4 * H; ++r) {
        double s = b_ih[r] + b_hh[r];
        for (int64_t j = 0; j < in; ++j) s += w_ih[r * in + j] * x[(t * B + b) * in + j];
        for (int64_t j = 0; j < H; ++j) s += w_hh[r * H + j] * h[j];
        gates[r] = s;
      }
      for (int64_t j = 0; j < H; ++j) {
        const double i = sigmoid_ref(gates[j]), f = sigmoid_ref(gates[H + j]), g = std::tanh(gates[2 * H + j]),
                     o = sigmoid_ref(gates[3 * H + j]);
        c[j] = f * c[j] + i * g;
        h[j] = o * std::tanh(c[j]);
        out[(t * B + b) * H + j] = h[j];
      }
    }
  }
  return out;
}

models::SequenceClassifierConfig tiny_classifier(const std::string& layer, int64_t vocab, int64_t classes) {
  models::SequenceClassifierConfig c;
  c.vocab = vocab;
  c.classes = classes;
  c.layer = layer;
  c.d_model = 4;
  c.layers = 2;
  c.heads = 2;
  c.d_ff = 6;
  c.seed = 5;
  return c;
}

}  // namespace

TEST_CASE("LSTM layer: the composition of engine ops matches a naive double loop") {
  const int64_t L = 5, B = 3, in = 4, H = 3;
  Generator gen(17);
  models::LSTMLayer lstm(in, H, gen);
  lstm.to(DType::f64);
  const Tensor x = normal({L, B, in}, 0.0, 1.0, gen, DType::f64);
  NoGradGuard no_grad;
  const std::vector<double> got = lstm.forward(x).to_vector<double>();
  const std::vector<double> want =
      naive_lstm(x.to_vector<double>(), L, B, in, H, lstm.weight_ih.to_vector<double>(),
                 lstm.weight_hh.to_vector<double>(), lstm.bias_ih.to_vector<double>(), lstm.bias_hh.to_vector<double>());
  REQUIRE(got.size() == want.size());
  double gap = 0.0;
  for (size_t i = 0; i < got.size(); ++i) gap = std::max(gap, std::abs(got[i] - want[i]));
  CHECK(gap < 1e-13);
  // L = 1 (no recurrent product at all).
  const std::vector<double> one = lstm.forward(narrow(x, 0, 0, 1)).to_vector<double>();
  for (int64_t i = 0; i < B * H; ++i) CHECK(one[i] == doctest::Approx(want[i]).epsilon(1e-13));
}

TEST_CASE("sequence classifier: float64 gradients match finite differences") {
  // Sequences of different lengths in one batch: the read-out position differs per sequence.
  const datasets::ClassificationBatch batch = datasets::make_batch({{{1, 2, 3, 4}, 0}, {{3, 1}, 2}, {{2, 2, 5}, 1}});
  const models::ClassifierTensors t = models::to_tensors(batch);
  // Every layer the classifier offers: the LSTM and each fast layer of model.fast_layer.
  for (const std::string& layer : models::sequence_layer_names()) {
    CAPTURE(layer);
    models::SequenceClassifier model(tiny_classifier(layer, 6, 3));
    model.to(DType::f64);
    const auto loss = [&](const std::vector<Tensor>&) {
      return cross_entropy(model.forward(t.tokens, t.lengths), t.labels);
    };
    // A step of 1e-5 rather than 1e-6: some gradients here are ~1e-4, where the default
    // step's rounding noise (~1e-16 / 1e-6 per difference) alone is 1e-6 relative.
    autodiff::GradcheckOptions options;
    options.eps = 1e-5;
    const autodiff::GradcheckResult r = autodiff::gradcheck(loss, model.parameters(), options);
    INFO(r.report);
    CHECK(r.ok);
  }
}

TEST_CASE("sequence classifier: a sequence's logits do not depend on the padding or the rest of the batch") {
  for (const std::string& layer : models::sequence_layer_names()) {
    CAPTURE(layer);
    models::SequenceClassifier model(tiny_classifier(layer, 6, 3));
    model.to(DType::f64);
    NoGradGuard no_grad;
    const models::ClassifierTensors both = models::to_tensors(datasets::make_batch({{{1, 2, 3, 4, 5}, 0}, {{3, 1}, 2}}));
    const models::ClassifierTensors alone = models::to_tensors(datasets::make_batch({{{3, 1}, 2}}));
    const std::vector<double> in_batch = model.forward(both.tokens, both.lengths).to_vector<double>();
    const std::vector<double> single = model.forward(alone.tokens, alone.lengths).to_vector<double>();
    for (int64_t k = 0; k < 3; ++k) CHECK(in_batch[3 + k] == doctest::Approx(single[k]).epsilon(1e-12));
  }
}

TEST_CASE("sequence classifier: learns a small code execution task (the loss drops)") {
  CodeExecutionConfig c;
  c.variables = 1;
  c.statements = 1;
  c.train_size = 64;
  c.seed = 2;
  const CodeExecution task(c);
  for (const char* layer : {"lstm", "delta_net"}) {
    CAPTURE(layer);
    models::SequenceClassifierConfig mc = tiny_classifier(layer, task.vocabulary().size(), task.num_classes());
    mc.d_model = 16;
    mc.d_ff = 32;
    mc.layers = 1;
    models::SequenceClassifier model(mc);
    models::AdamOptions options;
    options.form = models::AdamForm::pytorch;
    models::Adam adam(model.named_parameters(), options, models::LrSchedule::constant(1e-2));
    const models::ClassifierTensors t = models::to_tensors(models::split_batch(task, Split::train, 0, 64));
    const double before = models::evaluate(model, task, Split::train, 64).loss;
    for (int step = 0; step < 60; ++step) {
      cross_entropy(model.forward(t.tokens, t.lengths), t.labels).backward();
      adam.step();
      adam.zero_grad();
    }
    const models::Evaluation after = models::evaluate(model, task, Split::train, 64);
    CAPTURE(before);
    CAPTURE(after.loss);
    CHECK(after.loss < 0.5 * before);
    CHECK(after.accuracy > 0.5);
  }
}

TEST_CASE("sequence classifier: bad configs and inputs are errors that name the problem") {
  models::SequenceClassifierConfig c = tiny_classifier("gru", 6, 3);
  check_mentions(error_of([&] { models::SequenceClassifier{c}; }), {"model.layer", "gru", "lstm"});
  c = tiny_classifier("delta_net", 6, 3);
  c.heads = 3;
  check_mentions(error_of([&] { models::SequenceClassifier{c}; }), {"model.heads", "3"});
  c = tiny_classifier("lstm", 6, 1);
  check_mentions(error_of([&] { models::SequenceClassifier{c}; }), {"model.classes"});
  c = tiny_classifier("lstm", 6, 3);
  c.layers = 0;
  check_mentions(error_of([&] { models::SequenceClassifier{c}; }), {"model.layers"});
  models::SequenceClassifier model(tiny_classifier("lstm", 6, 3));
  const Tensor tokens = Tensor::from_vector<int64_t>({1, 2, 3, 4}, {2, 2});
  check_mentions(error_of([&] { model.forward(tokens, Tensor::from_vector<int64_t>({2, 3}, {2})); }),
                 {"lengths[1] = 3", "L = 2"});
  check_mentions(error_of([&] { model.forward(tokens, Tensor::from_vector<int64_t>({2}, {1})); }), {"lengths", "B = 2"});
  check_mentions(error_of([&] { model.forward(Tensor::from_vector<int64_t>({1, 9}, {1, 2}),
                                              Tensor::from_vector<int64_t>({1, 1}, {2})); }),
                 {"9"});
}

// ---- the run config and protocol (models/programs/algorithmic.h) --------------------------------------

TEST_CASE("algorithmic config: a valid config, with the vocabulary and classes from the task") {
  const models::AlgorithmicConfig c = models::parse_algorithmic_config(
      R"({"out_dir": "runs/x", "task": {"kind": "listops", "max_depth": 15, "seed": 4},
          "model": {"layer": "delta_net", "d_model": 32, "heads": 4}, "training": {"steps": 7, "lr": 0.01}})",
      "run.json");
  CHECK(c.task_kind == "listops");
  CHECK(c.listops.max_depth == 15);
  CHECK(c.listops.min_depth == 15);  // defaults to max_depth
  CHECK(c.listops.seed == 4);
  CHECK(c.model.vocab == 16);
  CHECK(c.model.classes == 10);
  CHECK(c.model.layer == "delta_net");
  CHECK(c.training.steps == 7);
  CHECK(c.training.lr == 0.01);
  CHECK(std::isnan(c.expect_test_accuracy_above));
  // Every shipped config parses.
  for (const char* name : {"code_execution_quick", "code_execution_rfwp", "code_execution_rfwp_reduced",
                           "listops_rfwp_depth10", "listops_rfwp_depth10_reduced", "listops_rfwp_depth15",
                           "listops_rfwp_depth15_reduced"}) {
    CAPTURE(name);
    CHECK_NOTHROW(models::load_algorithmic_config(std::string(LOOM_SOURCE_ROOT) + "/examples/configs/" + name + ".json"));
  }
}

TEST_CASE("algorithmic config: bad configs are errors that name the key") {
  const auto parse = [](const std::string& text) { return models::parse_algorithmic_config(text, "run.json"); };
  const std::string task = R"("task": {"kind": "code_execution"})";
  check_mentions(error_of([&] { parse(R"({"out_dir": "r", )" + task + R"(, "modle": {}})"); }),
                 {"run.json.modle", "unknown key"});
  check_mentions(error_of([&] { parse(R"({)" + task + R"(})"); }), {"run.json.out_dir", "missing"});
  check_mentions(error_of([&] { parse(R"({"out_dir": "r"})"); }), {"run.json.task", "missing"});
  check_mentions(error_of([&] { parse(R"({"out_dir": "r", "task": {"kind": "sorting"}})"); }),
                 {"run.json.task.kind", "sorting"});
  check_mentions(error_of([&] { parse(R"({"out_dir": "r", "task": {"kind": "code_execution", "variables": 9}})"); }),
                 {"run.json.task", "variables", "9"});
  check_mentions(error_of([&] { parse(R"({"out_dir": "r", "task": {"kind": "code_execution", "variables": 2.5}})"); }),
                 {"run.json.task.variables", "integer", "2.5"});
  check_mentions(error_of([&] { parse(R"({"out_dir": "r", "task": {"kind": "listops", "seed": -1}})"); }),
                 {"run.json.task.seed", "non-negative"});
  check_mentions(error_of([&] { parse(R"({"out_dir": "r", "task": {"kind": "listops", "depth": 10}})"); }),
                 {"run.json.task.depth", "unknown key", "max_depth"});
  check_mentions(error_of([&] { parse(R"({"out_dir": "r", )" + task + R"(, "model": {"layer": "gru"}})"); }),
                 {"run.json.model.layer", "gru"});
  check_mentions(error_of([&] { parse(R"({"out_dir": "r", )" + task + R"(, "model": {"layer": "delta_net", "heads": 3}})"); }),
                 {"run.json.model.heads", "3"});
  check_mentions(error_of([&] { parse(R"({"out_dir": "r", )" + task + R"(, "model": {"d_model": "wide"}})"); }),
                 {"run.json.model.d_model", "wide"});
  check_mentions(error_of([&] { parse(R"({"out_dir": "r", )" + task + R"(, "training": {"lr": 0}})"); }),
                 {"run.json.training.lr", "positive"});
  check_mentions(error_of([&] { parse(R"({"out_dir": "r", )" + task + R"(, "training": {"steps": 0}})"); }),
                 {"run.json.training.steps", "at least 1"});
  check_mentions(error_of([&] { parse(R"({"out_dir": "r", )" + task + R"(, "training": {"lr": 0.1, "lr": 0.2}})"); }),
                 {"run.json", "lr"});
  check_mentions(error_of([&] { parse(R"({"out_dir": "r", )" + task + R"(, "expect": {"accuracy": 1}})"); }),
                 {"run.json.expect.accuracy", "unknown key"});
  check_mentions(error_of([&] { parse("{not json"); }), {"run.json"});
  check_mentions(error_of([&] { models::load_algorithmic_config("/nonexistent/run.json"); }), {"/nonexistent/run.json"});
}

TEST_CASE("algorithmic protocol: the test accuracy is that of the best validation step's parameters") {
  CodeExecutionConfig c;
  c.variables = 1;
  c.statements = 1;
  c.train_size = 256;
  c.valid_size = c.test_size = 64;
  const CodeExecution task(c);
  models::SequenceClassifierConfig mc = tiny_classifier("lstm", task.vocabulary().size(), task.num_classes());
  mc.d_model = 16;
  mc.layers = 1;
  models::SequenceClassifier model(mc);
  models::AlgorithmicTraining tr;
  tr.steps = 40;
  tr.batch_size = 32;
  tr.lr = 1e-2;
  tr.eval_interval = 10;
  tr.log_interval = 20;
  std::vector<std::string> lines;
  const models::AlgorithmicRun run =
      models::train_algorithmic(model, task, tr, 1, [&](const std::string& line) { lines.push_back(line); });
  CHECK(lines.size() == 2 + 4);  // two progress lines, four validations
  CHECK(run.best_step % 10 == 0);
  // The model holds the best step's parameters: its validation accuracy is the best one.
  CHECK(models::evaluate(model, task, Split::valid, 64).accuracy == run.best_valid_accuracy);
  CHECK(models::evaluate(model, task, Split::test, 64).accuracy == run.test.accuracy);
  CHECK(run.test.examples == 64);
}

}  // namespace loom::test
