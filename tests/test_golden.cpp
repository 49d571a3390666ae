// test_golden.cpp: loom against the labml_nn PyTorch models themselves.
//
// tests/golden/ holds, for each family and variant, a labml state_dict saved by
// PyTorch (<case>.safetensors, float32, with the loom config of the same model in
// its metadata) and what the labml model computes from it in float64 for one
// fixed batch (<case>.reference.safetensors: logits, mean cross-entropy loss and
// every parameter gradient). tests/tools/make_golden.py writes them; it needs
// PyTorch and labml_nn, these tests do not. For each case:
//   - the loom model of the file's config loads the PyTorch checkpoint with
//     models::load_model, which checks every name, shape and dtype;
//   - named_parameters() lists labml's parameters in labml's order;
//   - in float64 the logits and the loss agree within 1e-9 and every parameter
//     gradient within 1e-8 (max |difference| relative to the largest magnitude);
//     parameters that PyTorch leaves without a gradient get none in loom either;
//   - save_model writes the checkpoint's tensors back bit for bit, and a model
//     loaded from that file holds them bit for bit.
// A missing golden file fails: they are checked in.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/safetensors.h"
#include "model_test_utils.h"
#include "models/programs/checkpoint.h"
#include "models/programs/config.h"
#include "models/families/language_model.h"

namespace loom::test {

namespace {

namespace fs = std::filesystem;

// Every case make_golden.py writes.
const std::vector<std::string> kCases = {
    "transformer",        "primer_ez_per_channel", "primer_ez_shared", "primer_ez_per_head",
    "fast_weights_dpfp1", "fast_weights_dpfp2",    "feedback_kv",      "feedback",
};

const fs::path kGoldenDir = fs::path(LOOM_SOURCE_ROOT) / "tests" / "golden";

std::string checkpoint_path(const std::string& name) { return (kGoldenDir / (name + ".safetensors")).string(); }
std::string reference_path(const std::string& name) {
  return (kGoldenDir / (name + ".reference.safetensors")).string();
}

std::map<std::string, Tensor> by_name(const NamedTensors& tensors) { return {tensors.begin(), tensors.end()}; }

std::unique_ptr<models::LanguageModel> model_of(const SafetensorsFile& checkpoint, const std::string& path) {
  const auto config = checkpoint.metadata.find("config");
  REQUIRE_MESSAGE(config != checkpoint.metadata.end(), path, " has no \"config\" metadata");
  return models::make_model(models::parse_train_config(config->second, path + " (config)").model);
}

// max |a - b| / max(max |b|, floor) over all elements (both read as doubles).
double relative_difference(const Tensor& got, const Tensor& expected, double floor = 1e-300) {
  REQUIRE(got.shape() == expected.shape());
  const std::vector<double> a = cast(got.detach(), DType::f64).to_vector<double>();
  const std::vector<double> b = cast(expected, DType::f64).to_vector<double>();
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  if (std::isnan(diff)) return INFINITY;
  return diff / std::max(scale, floor);
}

// Same dtype, shape and bytes.
bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  auto equal = [](const auto& x, const auto& y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(x[0])) == 0;
  };
  switch (a.dtype()) {
    case DType::f32: return equal(a.to_vector<float>(), b.to_vector<float>());
    case DType::f64: return equal(a.to_vector<double>(), b.to_vector<double>());
    case DType::i64: return equal(a.to_vector<int64_t>(), b.to_vector<int64_t>());
  }
  return false;
}

// Every tensor of `expected` is in `got` with the same bits, and `got` has no others.
void check_same_tensors(const NamedTensors& got, const NamedTensors& expected, const std::string& what) {
  const std::map<std::string, Tensor> got_by_name = by_name(got);
  CHECK_MESSAGE(got.size() == expected.size(), what, " has ", got.size(), " tensors, the checkpoint ", expected.size());
  for (const auto& item : expected) {
    const auto& name = item.first;
    const auto& tensor = item.second;
    const auto it = got_by_name.find(name);
    if (it == got_by_name.end()) {
      FAIL_CHECK(what, " lacks ", name);
      continue;
    }
    CHECK_MESSAGE(same_bits(it->second, tensor), what, ": ", name, " differs from the checkpoint");
  }
}

NamedTensors model_tensors(const models::Module& model) {
  NamedTensors all = model.named_parameters();
  for (auto& entry : model.named_buffers()) all.push_back(entry);
  return all;
}

void check_golden(const std::string& name) {
  const std::string path = checkpoint_path(name);
  REQUIRE_MESSAGE(fs::exists(path), path, " is missing (tests/tools/make_golden.py writes it)");
  REQUIRE_MESSAGE(fs::exists(reference_path(name)), reference_path(name), " is missing");
  const SafetensorsFile checkpoint = read_safetensors(path);
  const std::map<std::string, Tensor> reference = by_name(load_safetensors(reference_path(name)));

  // The PyTorch checkpoint loads as it is, and the parameters come in labml's order.
  std::unique_ptr<models::LanguageModel> model = model_of(checkpoint, path);
  models::load_model(path, *model);
  std::vector<std::string> labml_order = nlohmann::json::parse(checkpoint.metadata.at("parameters"));
  std::vector<std::string> loom_order;
  for (const auto& [param, tensor] : model->named_parameters()) loom_order.push_back(param);
  CHECK(loom_order == labml_order);

  // Forward and backward in float64, on the reference batch.
  model->to(DType::f64);
  model->eval();
  const Tensor& target = reference.at("__target__");
  const Tensor logits = model->forward(reference.at("__input__"));
  const int64_t vocab = model->config().vocab;
  const Tensor loss = cross_entropy(logits.reshape({-1, vocab}), target.reshape({-1}));
  loss.backward();

  const double logits_difference = relative_difference(logits, reference.at("__logits__"));
  CHECK_MESSAGE(logits_difference <= 1e-9, "logits: relative difference ", logits_difference);
  const double loss_difference = relative_difference(loss, reference.at("__loss__"));
  CHECK_MESSAGE(loss_difference <= 1e-9, "loss ", loss.item(), " vs ", reference.at("__loss__").item());

  std::set<std::string> compared;
  for (const auto& item : model->named_parameters()) {
    const auto& param = item.first;
    const auto& tensor = item.second;
    const auto expected = reference.find("__grad__." + param);
    if (expected == reference.end()) {
      CHECK_MESSAGE(!tensor.grad().defined(), param, " has a gradient, labml's has none");
      continue;
    }
    compared.insert(expected->first);
    if (!tensor.grad().defined()) {
      FAIL_CHECK(param, " has no gradient, labml's has one");
      continue;
    }
    // The biases of the keys (and of their convolution) get gradients that are zero in
    // exact arithmetic: the softmax over the keys ignores what they add to every score
    // of a query alike. Both sides hold rounding noise there (~1e-18), so the
    // difference is taken relative to at least 1e-6, far below every true gradient here.
    const double difference = relative_difference(tensor.grad(), expected->second, 1e-6);
    CHECK_MESSAGE(difference <= 1e-8, "gradient of ", param, ": relative difference ", difference);
  }
  for (const auto& item : reference) {
    const auto& entry = item.first;
    if (entry.rfind("__grad__.", 0) == 0) CHECK_MESSAGE(compared.count(entry), entry, " names no loom parameter");
  }

  // The round trip: loom writes the checkpoint's tensors back unchanged, and reads them again.
  TempDir dir("golden-" + name);
  const std::string saved = dir.file("model.safetensors");
  std::unique_ptr<models::LanguageModel> original = model_of(checkpoint, path);
  models::load_model(path, *original);
  models::save_model(saved, *original);
  check_same_tensors(load_safetensors(saved), checkpoint.tensors, "the file save_model wrote");
  std::unique_ptr<models::LanguageModel> reloaded = model_of(checkpoint, path);
  models::load_model(saved, *reloaded);
  check_same_tensors(model_tensors(*reloaded), checkpoint.tensors, "the model loaded from it");
}

}  // namespace

TEST_CASE("golden: tests/golden holds the files of every case and nothing else") {
  REQUIRE_MESSAGE(fs::is_directory(kGoldenDir), kGoldenDir.string(), " is missing");
  std::set<std::string> expected;
  for (const std::string& name : kCases) {
    expected.insert(name + ".safetensors");
    expected.insert(name + ".reference.safetensors");
  }
  std::set<std::string> present;
  for (const auto& entry : fs::directory_iterator(kGoldenDir))
    if (entry.path().extension() == ".safetensors") present.insert(entry.path().filename().string());
  for (const std::string& file : expected) CHECK_MESSAGE(present.count(file), "missing: ", file);
  for (const std::string& file : present) CHECK_MESSAGE(expected.count(file), "not a known case: ", file);
}

TEST_CASE("golden: transformer equals labml's AutoregressiveTransformer") { check_golden("transformer"); }
TEST_CASE("golden: primer_ez (per_channel) equals labml's MultiDConvHeadAttention model") {
  check_golden("primer_ez_per_channel");
}
TEST_CASE("golden: primer_ez (shared) equals labml's MultiDSharedConvHeadAttention model") {
  check_golden("primer_ez_shared");
}
TEST_CASE("golden: primer_ez (per_head) equals labml's MultiDPHConvHeadAttention model") {
  check_golden("primer_ez_per_head");
}
TEST_CASE("golden: fast_weights (DPFP nu=1, delta rule) equals labml's FastWeightsAttentionTransformer") {
  check_golden("fast_weights_dpfp1");
}
TEST_CASE("golden: fast_weights (DPFP nu=2, delta rule) equals labml's FastWeightsAttentionTransformer") {
  check_golden("fast_weights_dpfp2");
}
TEST_CASE("golden: feedback (shared_kv) equals labml's FeedbackTransformerKV") { check_golden("feedback_kv"); }
TEST_CASE("golden: feedback (per-layer keys and values) equals labml's FeedbackTransformer") {
  check_golden("feedback");
}

}  // namespace loom::test
