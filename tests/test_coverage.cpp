// test_coverage.cpp: every op of engine/op_list.h is tested, on the CPU and
// against the GPU, and every differentiable op has a backward rule and a
// gradient-checked case.
//
// A case does not say which op it tests: each case runs once here, and the op
// under test is the one that made the case's output, read off the recorded
// graph (output.grad_fn()->op) or, for the ops that never record (comparisons,
// argmax, random fills, in-place writes), from the report they send to a
// watcher (engine/record.h: ran()). A case that claims one op but runs another
// therefore covers the one it runs.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "autodiff/node.h"
#include "engine/ops.h"
#include "engine/record.h"
#include "tests/op_table.h"

namespace loom::test {

namespace {

// An op that never records reports the tensor it wrote; in-place ops may write
// through a view, so what identifies the output is its storage.
struct Report {
  OpId op;
  const Storage* written;
};
thread_local std::vector<Report> t_reports;

void watch(OpId op, const Tensor& output) { t_reports.push_back({op, output.storage().get()}); }

// The op that made c's output, or an empty string naming what went wrong.
std::string op_under_test(const OpCase& c, OpId& op) {
  std::vector<Tensor> leaves = make_leaves(c, DType::f64, 1);
  // Inputs that the gradient check would differentiate require grad, so
  // differentiable ops record themselves even in cases that skip the check.
  for (size_t i = 0; i < leaves.size(); ++i)
    if (c.inputs[i].index_bound == 0 && c.inputs[i].differentiable) leaves[i].requires_grad_();
  t_reports.clear();
  const OpWatcher previous = set_op_watcher(&watch);
  Tensor out;
  try {
    out = c.run(apply_layouts(c, leaves));
  } catch (const Error& e) {
    set_op_watcher(previous);
    return std::string("the case throws: ") + e.what();
  }
  set_op_watcher(previous);
  if (!out.defined()) return "the case returned an undefined tensor";
  if (out.grad_fn()) {
    op = out.grad_fn()->op;
    return "";
  }
  for (size_t i = t_reports.size(); i-- > 0;) {
    if (t_reports[i].written == out.storage().get()) {
      op = t_reports[i].op;
      return "";
    }
  }
  return "no op made the case's output (it has no recorded node, and no op reported writing its storage)";
}

}  // namespace

TEST_CASE("coverage: every op has a case, a CUDA parity case, and (differentiable ops) a rule and a gradcheck") {
  std::map<OpId, std::vector<std::string>> tested;
  std::set<OpId> gradchecked, on_cuda;
  for (const OpCase& c : op_cases()) {
    OpId op{};
    const std::string problem = op_under_test(c, op);
    INFO("case: ", c.name);
    CHECK_MESSAGE(problem.empty(), problem);
    if (!problem.empty()) continue;
    tested[op].push_back(c.name);
    if (c.gradcheck) gradchecked.insert(op);
    if (c.cuda) on_cuda.insert(op);
  }
  for (int i = 0; i < kOpCount; ++i) {
    const OpId op = static_cast<OpId>(i);
    INFO("op: ", std::string(op_name(op)));
    CHECK_MESSAGE(tested.count(op), "no case in the op table runs this op");
    CHECK_MESSAGE(on_cuda.count(op), "no CUDA parity case (an op-table case with cuda = true)");
    const bool has_rule = rule_for(op).fn != nullptr;
    if (op_differentiable(op)) {
      CHECK_MESSAGE(has_rule, "no backward rule");
      CHECK_MESSAGE(gradchecked.count(op), "no gradient-checked case");
    } else {
      CHECK_MESSAGE(!has_rule, "a backward rule for an op listed as not differentiable");
      CHECK_MESSAGE(!gradchecked.count(op), "a case gradchecks an op listed as not differentiable");
    }
  }
}

// The check itself: a case that claims an op it does not run covers nothing.
TEST_CASE("coverage: the op under test comes from what the case ran") {
  OpCase liar{"claims to be softmax, runs exp", {InputSpec({2, 3})},
              [](const std::vector<Tensor>& x) { return exp(x[0]); },
              [](const std::vector<Ref>& r) { return r[0]; }};
  OpId op{};
  CHECK(op_under_test(liar, op).empty());
  CHECK(op == OpId::exp);

  OpCase fill{"fill_ of a clone", {InputSpec({2, 3}).constant()},
              [](const std::vector<Tensor>& x) {
                Tensor out = clone(x[0]);
                fill_(out, 2.0);
                return out;
              },
              [](const std::vector<Ref>& r) { return r[0]; }, false};
  CHECK(op_under_test(fill, op).empty());
  CHECK(op == OpId::fill_);

  OpCase leaf{"returns its input", {InputSpec({2}).constant()}, [](const std::vector<Tensor>& x) { return x[0]; },
              [](const std::vector<Ref>& r) { return r[0]; }, false};
  CHECK(!op_under_test(leaf, op).empty());
}

namespace {

using IncludeVisitor = std::function<void(const std::filesystem::path& file, const std::string& line)>;

// Calls visit(file, line) for each `#include "..."` line of the .h and .cpp
// files below `folder` (relative to the source root); returns the files it read.
std::vector<std::filesystem::path> for_each_include(const std::string& folder, const IncludeVisitor& visit) {
  namespace fs = std::filesystem;
  const fs::path root = fs::path(LOOM_SOURCE_ROOT) / folder;
  REQUIRE(fs::is_directory(root));
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    const std::string ext = entry.path().extension().string();
    if (ext != ".h" && ext != ".cpp") continue;
    files.push_back(entry.path());
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("#include \"", 0) == 0) visit(entry.path(), line);
  }
  return files;
}

}  // namespace

// engine/README.md: "Nothing here includes anything from autodiff/, models/ or
// cuda/: arrows point down only." Read off the sources themselves.
TEST_CASE("coverage: engine/ includes nothing from the folders above it") {
  const auto files = for_each_include("engine", [](const std::filesystem::path& file, const std::string& line) {
    for (const char* above : {"autodiff/", "models/", "cuda/", "datasets/", "examples/", "tests/"})
      CHECK_MESSAGE(line.find(std::string("\"") + above) == std::string::npos, file.string() << ": " << line);
  });
  CHECK(files.size() > 50);
}

// models/README.md: blocks/ <- families/ <- programs/, each file including only
// from its own layer and the layers below. Every source file of models/ sits in
// one of the three, so none escapes the check.
TEST_CASE("coverage: models/ layers include only from the layers below them") {
  const std::vector<std::string> layers = {"blocks", "families", "programs"};  // bottom first
  const auto rank_of = [&](const std::string& layer) {
    for (size_t i = 0; i < layers.size(); ++i)
      if (layers[i] == layer) return static_cast<int>(i);
    return -1;
  };
  const std::filesystem::path models = std::filesystem::path(LOOM_SOURCE_ROOT) / "models";
  const auto layer_of = [&](const std::filesystem::path& file) {
    return rank_of(std::filesystem::relative(file, models).begin()->string());
  };
  const std::string prefix = "#include \"models/";
  const auto files = for_each_include("models", [&](const std::filesystem::path& file, const std::string& line) {
    const int rank = layer_of(file);
    if (line.rfind(prefix, 0) != 0) return;
    const std::string included = line.substr(prefix.size(), line.find('/', prefix.size()) - prefix.size());
    const int included_rank = rank_of(included);
    CHECK_MESSAGE(included_rank >= 0, file.string() << ": " << line << " is in none of the layers");
    CHECK_MESSAGE(included_rank <= rank, file.string() << ": " << line << " points up");
  });
  for (const auto& file : files)
    CHECK_MESSAGE(layer_of(file) >= 0, file.string() << " is in none of the layers of models/");
  CHECK(files.size() > 30);
}

}  // namespace loom::test
