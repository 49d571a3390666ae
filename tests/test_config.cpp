// test_config.cpp: JSON training configs: family defaults, a round trip, and a
// table of bad configs, each of which must be refused with its key path named.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "model_test_utils.h"
#include "models/programs/config.h"

namespace loom::test {

using models::TrainConfig;

TEST_CASE("config: an empty object gives the transformer's defaults; the family picks its labml defaults") {
  const TrainConfig c = models::parse_train_config("{}");
  CHECK(c.model.family == "transformer");
  CHECK(c.vocab_from_data);

  const TrainConfig fw = models::parse_train_config(R"({"model": {"family": "fast_weights"}})");
  CHECK(fw.model.d_model == 512);
  CHECK(fw.model.heads == 8);
  CHECK(fw.model.dropout == 0.0);
  CHECK(fw.data.seq_len == 128);
  CHECK(fw.data.batch_size == 16);
  CHECK(fw.optimizer.kind == "noam");
  CHECK(fw.optimizer.lr == 1.0);
  CHECK(fw.optimizer.warmup == 2000);
  CHECK(fw.optimizer.eps == 1e-8);
  CHECK(fw.optimizer.clip == 1.0);
  CHECK(fw.sample.prompt == "It is");
  CHECK(fw.sample.length == 25);
  CHECK(fw.training.epochs == 128);
  CHECK(fw.total_steps(491) == 62848);  // models/FAMILIES.md §2.1

  const TrainConfig fb = models::parse_train_config(R"({"model": {"family": "feedback"}})");
  CHECK(fb.data.batch_size == 64);
  CHECK(fb.total_steps(123) == 15744);

  const TrainConfig pr = models::parse_train_config(R"({"model": {"family": "primer_ez"}})");
  CHECK(pr.model.dropout == 0.1);
  CHECK(pr.data.seq_len == 256);
  CHECK(pr.data.batch_size == 32);
  CHECK(pr.optimizer.kind == "adam");
  CHECK(pr.optimizer.lr == 2.5e-4);
  CHECK(pr.sample.prompt == "It is ");

  // A value in the file overrides the family's default.
  const TrainConfig pr2 = models::parse_train_config(R"({"model": {"family": "primer_ez", "dropout": 0.0},
                                                        "training": {"steps": 7}})");
  CHECK(pr2.model.dropout == 0.0);
  CHECK(pr2.total_steps(123) == 7);
}

TEST_CASE("config: a full config round trips through to_json") {
  const std::string text = R"({
    "model": {"family": "fast_weights", "vocab": 70, "d_model": 96, "heads": 3, "d_ff": 128, "layers": 2,
              "dropout": 0.25, "seed": 18446744073709551615, "feature_map": "elu_plus_one", "dpfp_nu": 3,
              "update_rule": "sum", "attention_layer_norm": true},
    "data": {"path": "x/y.txt", "url": "", "seq_len": 32, "batch_size": 3, "seed": 9},
    "optimizer": {"kind": "adam", "form": "pytorch", "lr": 0.003, "betas": [0.8, 0.99], "eps": 1e-6,
                  "warmup": 10, "weight_decay": 0.01, "clip": 0.5},
    "training": {"epochs": 2.5, "log_interval": 3, "eval_interval": 0, "eval_batches": 2,
                 "checkpoint_interval": 0, "patience": 4, "out_dir": "o", "log": "", "threads": 2, "device": "cuda"},
    "sample": {"prompt": "To be", "length": 0}
  })";
  const TrainConfig c = models::parse_train_config(text);
  CHECK(c.model.family == "fast_weights");
  CHECK(!c.vocab_from_data);
  CHECK(c.model.vocab == 70);
  CHECK(c.model.d_model == 96);
  CHECK(c.model.heads == 3);
  CHECK(c.model.seed == 18446744073709551615ull);
  CHECK(c.model.feature_map == "elu_plus_one");
  CHECK(c.model.dpfp_nu == 3);
  CHECK(c.model.update_rule == "sum");
  CHECK(c.model.attention_layer_norm);
  CHECK(c.data.path == "x/y.txt");
  CHECK(c.data.url.empty());
  CHECK(c.data.seed == 9);
  CHECK(c.optimizer.form == "pytorch");
  CHECK(c.optimizer.beta1 == 0.8);
  CHECK(c.optimizer.beta2 == 0.99);
  CHECK(c.optimizer.clip == 0.5);
  CHECK(c.training.steps == 0);
  CHECK(c.training.epochs == 2.5);
  CHECK(c.training.device == "cuda");
  CHECK(c.training.patience == 4);
  CHECK(c.sample.prompt == "To be");
  CHECK(c.total_steps(10) == 25);

  const std::string once = models::to_json(c);
  const TrainConfig again = models::parse_train_config(once);
  CHECK(models::to_json(again) == once);
  CHECK(again.model.seed == c.model.seed);
  CHECK(again.optimizer.eps == c.optimizer.eps);
  CHECK(again.training.epochs == 2.5);
  CHECK(again.training.patience == 4);
  CHECK(models::parse_train_config("{}").training.patience == 0);  // absent: off
  // The defaults round trip as well, with the vocabulary left to the data.
  const TrainConfig defaults = models::parse_train_config("{}");
  CHECK(models::to_json(models::parse_train_config(models::to_json(defaults))) == models::to_json(defaults));
  CHECK(models::parse_train_config(models::to_json(defaults)).vocab_from_data);
}

TEST_CASE("config: the transformers' own keys round trip too") {
  const TrainConfig c = models::parse_train_config(R"({"model": {"family": "primer_ez", "conv_kernels": "per_head",
                                                              "conv_width": 5, "activation": "silu", "max_seq_len": 640}})");
  CHECK(c.model.conv_kernels == "per_head");
  CHECK(c.model.conv_width == 5);
  CHECK(c.model.activation == "silu");
  CHECK(c.model.max_seq_len == 640);
  const TrainConfig again = models::parse_train_config(models::to_json(c));
  CHECK(again.model.activation == "silu");
  CHECK(again.model.conv_kernels == "per_head");
  CHECK(models::to_json(again) == models::to_json(c));
}

TEST_CASE("config: bad configs are refused with the key path and the problem") {
  struct Bad {
    const char* json;
    const char* expected;  // a part of the message
  };
  const Bad table[] = {
      {R"([1, 2])", "config: expected an object, got [1,2]"},
      {R"({"model": {"heads": -3}})", "model.heads: expected a positive integer, got -3"},
      {R"({"model": {"heads": 0}})", "model.heads: expected a positive integer, got 0"},
      {R"({"model": {"heads": 2.5}})", "model.heads: expected a positive integer, got 2.5"},
      {R"({"model": {"heads": "8"}})", "model.heads: expected a positive integer, got \"8\""},
      {R"({"model": {"heads": 7}})", "model.heads: d_model 512 is not divisible by 7 heads"},
      {R"({"model": {"famly": "feedback"}})", "model.famly: unknown key (did you mean \"family\"?)"},
      {R"({"model": {"family": "lstm"}})",
       "model.family: expected one of \"transformer\", \"primer_ez\", \"fast_weights\", \"feedback\", \"bigram\", got \"lstm\""},
      {R"({"model": {"family": "primer_ez", "conv_kernels": "depthwise"}})",
       "model.conv_kernels: expected one of \"per_channel\", \"shared\", \"per_head\", got \"depthwise\""},
      {R"({"model": {"family": "fast_weights", "feature_map": "relu"}})", "model.feature_map: expected one of \"dpfp\", \"elu_plus_one\""},
      {R"({"model": {"family": "fast_weights", "update_rule": "hebb"}})", "model.update_rule: expected one of \"delta\", \"sum\""},
      {R"({"model": {"family": "fast_weights", "dpfp_nu": 0}})", "model.dpfp_nu: expected a positive integer, got 0"},
      {R"({"model": {"family": "primer_ez", "activation": "swish"}})",
       "model.activation: expected one of \"relu\", \"squared_relu\", \"gelu\", \"silu\", got \"swish\""},
      {R"({"model": {"family": "feedback", "activation": "silu"}})", "model.activation: not used by the feedback family"},
      {R"({"model": {"dropout": 1.0}})", "model.dropout: expected a number in [0, 1), got 1.0"},
      {R"({"model": {"dropout": -0.1}})", "model.dropout: expected a number in [0, 1), got -0.1"},
      {R"({"model": {"seed": -1}})", "model.seed: expected a non-negative integer, got -1"},
      {R"({"model": {"family": "feedback", "shared_kv": 1}})", "model.shared_kv: expected true or false, got 1"},
      {R"({"model": {"vocab": 0}})", "model.vocab: expected a positive integer, got 0"},
      {R"({"model": 5})", "model: expected an object, got 5"},
      {R"({"data": {"seq_len": 1024}})", "data.seq_len: 1024 is longer than model.max_seq_len 512"},
      {R"({"data": {"batch_size": 0}})", "data.batch_size: expected a positive integer, got 0"},
      {R"({"data": {"path": ""}})", "data.path: expected a non-empty string, got \"\""},
      {R"({"data": {"path": 3}})", "data.path: expected a non-empty string, got 3"},
      {R"({"data": {"seqlen": 3}})", "data.seqlen: unknown key (did you mean \"seq_len\"?)"},
      {R"({"optimizer": {"betas": [0.9, 1.5]}})", "optimizer.betas[1]: expected a number in [0, 1), got 1.5"},
      {R"({"optimizer": {"betas": ["a", 0.9]}})", "optimizer.betas[0]: expected a number in [0, 1), got \"a\""},
      {R"({"optimizer": {"betas": [0.9]}})", "optimizer.betas: expected a list of two numbers, got [0.9]"},
      {R"({"optimizer": {"lr": 0}})", "optimizer.lr: expected a positive number, got 0"},
      {R"({"optimizer": {"eps": -1e-8}})", "optimizer.eps: expected a positive number, got -1e-08"},
      {R"({"optimizer": {"kind": "sgd"}})", "optimizer.kind: expected one of \"adam\", \"noam\", got \"sgd\""},
      {R"({"optimizer": {"form": "torch"}})", "optimizer.form: expected one of \"labml\", \"pytorch\", got \"torch\""},
      {R"({"optimizer": {"warmup": 0}})", "optimizer.warmup: expected a positive integer, got 0"},
      {R"({"optimizer": {"weight_decay": -0.5}})", "optimizer.weight_decay: expected a non-negative number, got -0.5"},
      {R"({"optimizer": {"clip": -1}})", "optimizer.clip: expected a non-negative number (0: no clipping), got -1"},
      {R"({"training": {"steps": 10, "epochs": 2}})", "training: give \"steps\" or \"epochs\", not both"},
      {R"({"training": {"steps": 0}})", "training.steps: expected a positive integer, got 0"},
      {R"({"training": {"epochs": 0}})", "training.epochs: expected a positive number, got 0"},
      {R"({"training": {"eval_interval": -5}})", "training.eval_interval: expected a non-negative integer, got -5"},
      {R"({"training": {"patience": -1}})", "training.patience: expected a non-negative integer, got -1"},
      {R"({"training": {"patience": 2.5}})", "training.patience: expected a non-negative integer, got 2.5"},
      {R"({"training": {"patience": "3"}})", "training.patience: expected a non-negative integer, got \"3\""},
      {R"({"training": {"patience": true}})", "training.patience: expected a non-negative integer, got true"},
      {R"({"training": {"device": "tpu"}})", "training.device: expected one of \"cpu\", \"cuda\", got \"tpu\""},
      {R"({"training": {"threads": -2}})", "training.threads: expected a non-negative integer, got -2"},
      {R"({"training": {"out_dir": ""}})", "training.out_dir: expected a non-empty string"},
      {R"({"sample": {"prompt": "", "length": 5}})", "sample.prompt: must not be empty when sample.length is above 0"},
      {R"({"sample": {"length": -1}})", "sample.length: expected a non-negative integer, got -1"},
      {R"({"optimiser": {}})", "optimiser: unknown key (did you mean \"optimizer\"?)"},
      {R"({"zzz": 1})", "zzz: unknown key"},
      {R"({"model": {"family": "feedback"}, "model2": {}})", "model2: unknown key (did you mean \"model\"?)"},
      {R"({"model": )", "config: not valid JSON"},
  };
  for (const Bad& bad : table) {
    INFO("config: ", bad.json);
    const std::string message = error_of([&] { models::parse_train_config(bad.json); });
    INFO("message: ", message);
    CHECK(contains(message, bad.expected));
    CHECK(message.rfind("config: ", 0) == 0);  // starts with the source
  }
  // Every problem of a config is listed, one line each.
  const std::string all = error_of([] {
    models::parse_train_config(R"({"model": {"famly": "x", "heads": -3}, "optimizer": {"betas": [1, 0.9]}, "x": 1})");
  });
  CHECK(all == "config: model.heads: expected a positive integer, got -3\n"
               "config: model.famly: unknown key (did you mean \"family\"?)\n"
               "config: optimizer.betas[0]: expected a number in [0, 1), got 1\n"
               "config: x: unknown key");
  // A near miss gets no suggestion when nothing is close.
  CHECK(!contains(error_of([] { models::parse_train_config(R"({"zzz": 1})"); }), "did you mean"));
}

TEST_CASE("config: files are read from disk; errors start with the file name") {
  TempDir dir("config");
  const std::string path = dir.file("bad.json");
  std::ofstream(path) << R"({"model": {"layers": -1}})";
  CHECK(contains(error_of([&] { models::load_train_config(path); }), path + ": model.layers: expected a positive integer"));
  CHECK(contains(error_of([&] { models::load_train_config(dir.file("none.json")); }), "cannot open config file"));

  // Every shipped example config is valid.
  const std::filesystem::path configs = std::filesystem::path(LOOM_SOURCE_ROOT) / "examples" / "configs";
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(configs)) {
    // The retrieval sweeps and the algorithmic tasks have their own formats (meson tests
    // 'retrieval configs' and 'algorithmic configs', and test_algorithmic.cpp, check them).
    const std::string name = entry.path().filename().string();
    if (name.rfind("retrieval_", 0) == 0 || name.rfind("code_execution_", 0) == 0 || name.rfind("listops_", 0) == 0)
      continue;
    INFO(entry.path().string());
    CHECK(error_of([&] { models::load_train_config(entry.path().string()); }) == "");
    ++count;
  }
  CHECK(count >= 5);
}

}  // namespace loom::test
