// test_checkpoint.cpp: model files under state_dict names, loading in place,
// the list of mismatches, and the optimizer/training-state file.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "autodiff/grad_mode.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "model_test_utils.h"
#include "tests/fused_check.h"
#include "models/programs/checkpoint.h"

namespace loom::test {

using models::TrainingState;

namespace {

std::vector<float> values(const Tensor& t) { return t.to_vector<float>(); }

}  // namespace

TEST_CASE("checkpoint: a model round trips under its exact names, loaded in place") {
  TempDir dir("checkpoint-model");
  const std::string path = dir.file("model.safetensors");
  TinyModule saved(Generator(1));
  models::save_model(path, saved, {{"note", "hello"}});

  // The file is plain safetensors with the state_dict names, parameters then buffers.
  const NamedTensors raw = load_safetensors(path);
  REQUIRE(raw.size() == 4);
  CHECK(raw[0].first == "weight");
  CHECK(raw[1].first == "bias");
  CHECK(raw[2].first == "inner.scale");
  CHECK(raw[3].first == "inner.table");

  TinyModule loaded(Generator(2));
  const Tensor weight_handle = loaded.weight;  // a second holder of the same tensor
  REQUIRE(values(loaded.weight) != values(saved.weight));
  const auto metadata = models::load_model(path, loaded);
  CHECK(metadata.at("note") == "hello");
  CHECK(values(loaded.weight) == values(saved.weight));
  CHECK(values(loaded.bias) == values(saved.bias));
  CHECK(values(loaded.inner.scale) == values(saved.inner.scale));
  CHECK(values(loaded.inner.table) == values(saved.inner.table));
  CHECK(values(weight_handle) == values(saved.weight));  // in place: every holder sees it
  CHECK(loaded.weight.requires_grad());
}

TEST_CASE("checkpoint: a mismatched file lists every missing, unexpected and wrong-shaped tensor") {
  TempDir dir("checkpoint-mismatch");
  const std::string path = dir.file("bad.safetensors");
  Generator gen(3);
  save_safetensors(path, {{"weight", normal({3, 5}, 0, 1, gen)},             // wrong shape
                          {"inner.scale", normal({4}, 0, 1, gen)},           // fine
                          {"inner.table", Tensor::zeros({2, 2}, DType::f64)},  // wrong dtype
                          {"extra.weight", Tensor::zeros({1})}});            // unexpected; "bias" is missing
  TinyModule model(Generator(4));
  const std::vector<float> before = values(model.inner.scale);
  const std::string message = error_of([&] { models::load_model(path, model); });
  CHECK(contains(message, "checkpoint " + path + " does not match the model (4 problems):"));
  CHECK(contains(message, "missing: bias float32[3]"));
  CHECK(contains(message, "unexpected: extra.weight float32[1]"));
  CHECK(contains(message, "wrong shape or dtype: weight is float32[3, 5] in the file, the model has float32[3, 4]"));
  CHECK(contains(message, "wrong shape or dtype: inner.table is float64[2, 2] in the file, the model has float32[2, 2]"));
  CHECK(values(model.inner.scale) == before);  // nothing was loaded
}

TEST_CASE("checkpoint: the optimizer and training state resume exactly") {
  TempDir dir("checkpoint-full");
  const std::string run = dir.file("run");
  std::filesystem::create_directories(run);

  TinyModule model(Generator(5));
  models::Adam adam(model.named_parameters(), models::AdamOptions{}, models::LrSchedule::noam(1.0, 8, 4));
  for (int step = 0; step < 3; ++step) {
    for (const Tensor& p : model.parameters()) p.set_grad(Tensor::full(p.shape(), 0.1 * (step + 1)));
    adam.step();
    adam.zero_grad();
  }
  TrainingState state;
  state.step = 3;
  state.elapsed_seconds = 1.0 / 3.0;
  state.config_json = R"({"model": {"family": "bigram"}})";
  state.train_batcher = {7, 2, 11};
  state.dropout_seed = 18446744073709551615ull;
  state.dropout_offset = 123456789;
  state.vocab = "\n abc";
  const std::string saved = models::save_checkpoint(run, model, adam, state);
  CHECK(saved == dir.file("run/checkpoint-3"));
  // The link names it, and the model file inside is plain safetensors with the config.
  CHECK(std::filesystem::read_symlink(dir.file("run/checkpoint")) == "checkpoint-3");
  const std::string model_file = dir.file("run/checkpoint/model.safetensors");
  CHECK(load_safetensors_metadata(model_file).at("config") == state.config_json);
  CHECK(load_safetensors_metadata(model_file).at("step") == "3");
  CHECK(models::latest_checkpoint_step(run) == 3);
  // The run directory, the checkpoint directory and its model file all name it.
  for (const std::string& path : {run, saved, model_file}) CHECK(models::find_checkpoint(path) == saved);

  TinyModule fresh(Generator(6));
  models::Adam fresh_adam(fresh.named_parameters(), models::AdamOptions{}, models::LrSchedule::noam(1.0, 8, 4));
  const TrainingState back = models::load_checkpoint(run, fresh, fresh_adam);
  CHECK(back.step == 3);
  CHECK(back.elapsed_seconds == state.elapsed_seconds);
  CHECK(back.config_json == state.config_json);
  CHECK(back.train_batcher == state.train_batcher);
  CHECK(back.dropout_seed == state.dropout_seed);
  CHECK(back.dropout_offset == state.dropout_offset);
  CHECK(back.vocab == state.vocab);
  CHECK(fresh_adam.steps_taken() == 3);
  CHECK(values(fresh.weight) == values(model.weight));

  // One more identical step on both gives identical parameters.
  for (const Tensor& p : model.parameters()) p.set_grad(Tensor::full(p.shape(), -0.2));
  for (const Tensor& p : fresh.parameters()) p.set_grad(Tensor::full(p.shape(), -0.2));
  adam.step();
  fresh_adam.step();
  CHECK(values(fresh.weight) == values(model.weight));
  CHECK(values(fresh.inner.scale) == values(model.inner.scale));

  // The next save replaces the link and removes the old directory.
  state.step = 4;
  CHECK(models::save_checkpoint(run, model, adam, state) == dir.file("run/checkpoint-4"));
  CHECK(!std::filesystem::exists(saved));
  CHECK(models::latest_checkpoint_step(run) == 4);

  // A model file from another save than its optimizer file is refused.
  models::save_model(dir.file("run/checkpoint/model.safetensors"), model, {{"step", "5"}, {"config", "{}"}});
  CHECK(contains(error_of([&] { models::load_checkpoint(run, fresh, fresh_adam); }),
                 "is at step 5 but " + dir.file("run/checkpoint-4/optimizer.safetensors") + " is at step 4"));
  // And a missing optimizer file is named.
  std::filesystem::remove(dir.file("run/checkpoint-4/optimizer.safetensors"));
  CHECK(contains(error_of([&] { models::load_checkpoint(run, fresh, fresh_adam); }),
                 "the optimizer state " + dir.file("run/checkpoint-4/optimizer.safetensors") + " is missing"));
  // A path that holds no checkpoint says what it expected.
  check_mentions(error_of([&] { models::find_checkpoint(dir.file("nothing")); }), {"nothing", "does not exist"});
  check_mentions(error_of([&] { models::find_checkpoint(dir.path.string()); }),
                 {"holds no checkpoint", "a run directory with a 'checkpoint' link"});
}

TEST_CASE("checkpoint: load_trained_model rebuilds the model from the file's config, with its vocabulary") {
  TempDir dir("checkpoint-trained");
  models::TrainConfig config;
  config.model.family = "fast_weights";
  config.model.vocab = 5;
  config.vocab_from_data = false;  // the vocabulary size is written into the config
  config.model.d_model = 8;
  config.model.heads = 2;
  config.model.d_ff = 16;
  config.model.layers = 1;
  config.model.seed = 4;
  auto saved = models::make_model(config.model);
  {
    NoGradGuard no_grad;
    uint64_t k = 0;
    for (const Tensor& p : saved->parameters()) copy_(p, random_f64(p.shape(), 90 + k++, -1.0, 1.0));
  }
  const std::string ckpt = dir.file("checkpoint-3");
  std::filesystem::create_directories(ckpt);
  models::save_model(ckpt + "/model.safetensors", *saved, {{"step", "3"}, {"config", models::to_json(config)}});
  std::ofstream(ckpt + "/vocab.json") << datasets::CharTokenizer("abcde").to_json();

  const models::TrainedModel trained = models::load_trained_model(ckpt);
  CHECK(trained.step == "3");
  CHECK(trained.config.model.family == "fast_weights");
  CHECK(trained.tokenizer.vocab_size() == 5);
  CHECK(trained.tokenizer.encode("cab") == std::vector<int64_t>{2, 0, 1});
  const NamedTensors expected = saved->named_parameters(), got = trained.model->named_parameters();
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CHECK(got[i].first == expected[i].first);
    CHECK(values(got[i].second) == values(expected[i].second));
  }

  // A vocabulary that does not fit the model, and a model file without its config, are named.
  std::ofstream(ckpt + "/vocab.json", std::ios::trunc) << datasets::CharTokenizer("abcd").to_json();
  const std::string vocab_error = error_of([&] { models::load_trained_model(ckpt); });
  CHECK(contains(vocab_error, ckpt + "/vocab.json"));
  CHECK(contains(vocab_error, "has 4 tokens but the model was trained with 5"));
  models::save_model(ckpt + "/model.safetensors", *saved, {{"step", "3"}});
  const std::string config_error = error_of([&] { models::load_trained_model(ckpt); });
  CHECK(contains(config_error, ckpt + "/model.safetensors"));
  CHECK(contains(config_error, "metadata has no \"config\""));
}

}  // namespace loom::test
