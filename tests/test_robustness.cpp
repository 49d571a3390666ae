// test_robustness.cpp: hostile but realistic inputs to training and generation get
// a clear error or the right result: sizes that overflow or cannot fit, deeply
// nested and duplicate-keyed JSON, a used or locked out_dir (locked before a
// resume reads it), a diverging run, non-finite weights, generation past the
// context, a shuffled vocabulary.
// (Failed and killed saves are in test_crash_safety.cpp.)
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "autodiff/grad_mode.h"
#include "engine/json.h"
#include "engine/safetensors.h"
#include "model_test_utils.h"
#include "models/programs/checkpoint.h"
#include "models/programs/config.h"
#include "models/programs/generate.h"
#include "models/blocks/layers.h"
#include "models/programs/trainer.h"

namespace loom::test {

namespace fs = std::filesystem;
using models::TrainConfig;

namespace {

std::string nested_array(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

std::string words_text(size_t length) {
  const char* words[] = {"the", "king", "is", "dead", "long", "live"};
  std::string text;
  uint64_t state = 99;
  while (text.size() < length) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    text += words[(state >> 33) % 6];
    text += " ";
  }
  text.resize(length);
  return text;
}

TrainConfig bigram_config(const std::string& out_dir, int64_t steps) {
  TrainConfig c = models::parse_train_config(R"({"model": {"family": "bigram", "d_model": 8},
      "data": {"seq_len": 8, "batch_size": 2}, "optimizer": {"lr": 0.01},
      "training": {"log_interval": 1, "eval_interval": 0, "eval_batches": 1, "checkpoint_interval": 2},
      "sample": {"prompt": "the ", "length": 4}})");
  c.training.steps = steps;
  c.training.out_dir = out_dir;
  return c;
}

// A bigram model and a trainer on words_text, as train builds them.
struct Run {
  TrainConfig config;
  std::unique_ptr<models::LanguageModel> model;
  std::unique_ptr<models::Trainer> trainer;
  explicit Run(TrainConfig c, size_t text_length = 4000) : config(std::move(c)) {
    datasets::TextDataset data = datasets::TextDataset::from_text(words_text(text_length));
    models::resolve_vocab(config, data.tokenizer);
    model = models::make_model(config.model);
    trainer = std::make_unique<models::Trainer>(config, *model, std::move(data));
  }
  bool run() {
    models::RunOptions quiet;
    quiet.progress = false;
    return trainer->run(quiet);
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

// ---- sizes ---------------------------------------------------------------------------------

TEST_CASE("robustness: sizes whose products overflow int64 are refused before any allocation") {
  // The engine: an element count or byte count past 2^63.
  check_mentions(error_of([] { Tensor::empty({70949015668113661, 65}); }), {"[70949015668113661, 65]", "2^63"});
  check_mentions(error_of([] { Tensor::empty({int64_t{1} << 61, 2}, DType::f64); }), {"needs more than 2^63 bytes"});
  // The config: parameters and memory estimated in double before make_model allocates.
  TrainConfig c = models::parse_train_config(R"({"model": {"family": "bigram", "d_model": 70949015668113661}})");
  c.model.vocab = 65;
  check_mentions(error_of([&] { models::make_model(c.model); }),
                 {"d_model 70949015668113661", "parameters", "but this machine has", "of memory"});
  // layers 1e9 of the default transformer: refused, not allocated until the kernel kills the process.
  TrainConfig deep = models::parse_train_config(R"({"model": {"layers": 1000000000}})");
  deep.model.vocab = 65;
  check_mentions(error_of([&] { models::make_model(deep.model); }), {"layers 1000000000", "but this machine has"});
  // A reasonable model is estimated within a small factor of its real size.
  TrainConfig small = models::parse_train_config(R"({"model": {"family": "primer_ez", "d_model": 64, "heads": 4,
      "d_ff": 128, "layers": 2}})");
  small.model.vocab = 65;
  const double real = static_cast<double>(models::make_model(small.model)->parameter_count());
  const double estimate = models::estimate_parameters(small.model);
  CHECK(estimate > 0.5 * real);
  CHECK(estimate < 2 * real + 5000 * 64);  // the estimate counts the positional table (a buffer)
}

TEST_CASE("robustness: training.epochs whose step count overflows is refused") {
  const TrainConfig c = models::parse_train_config(R"({"training": {"epochs": 1e16}})");
  check_mentions(error_of([&] { c.total_steps(1000); }), {"training.epochs", "more than 2^53"});
  // Integers given out of their type's range are refused by the parser.
  check_mentions(error_of([] { models::parse_train_config(R"({"data": {"seed": 18446744073709551616}})"); }),
                 {"data.seed: expected a non-negative integer"});
  check_mentions(error_of([] { models::parse_train_config(R"({"model": {"layers": 1e9}})"); }),
                 {"model.layers: expected a positive integer"});
}

// ---- JSON ------------------------------------------------------------------------------------

TEST_CASE("robustness: deeply nested JSON is refused before the parser sees it, in all three readers") {
  const std::string deep = nested_array(100000);
  check_mentions(error_of([&] { models::parse_train_config(deep, "run.json"); }),
                 {"run.json: ", "nested deeper than 64 levels"});
  check_mentions(error_of([&] { models::parse_train_config(R"({"model": {"heads": )" + deep + "}}"); }),
                 {"nested deeper than 64 levels"});
  check_mentions(error_of([&] { models::parse_vocab(deep, "vocab.json: "); }), {"vocab.json: ", "nested deeper"});
  // A safetensors header holding the array.
  TempDir dir("robust-deep");
  std::string header = R"({"x": )" + deep + "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>(uint64_t{header.size()} >> (8 * i));
  std::ofstream(dir.file("deep.safetensors"), std::ios::binary) << file << header;
  check_mentions(error_of([&] { load_safetensors(dir.file("deep.safetensors")); }), {"nested deeper than 64 levels"});
  // Brackets inside strings are text, not nesting.
  CHECK(parse_json_strictly(R"({"a": ")" + std::string(1000, '[') + R"("})", "").at("a").get<std::string>().size() ==
        1000);
}

TEST_CASE("robustness: a safetensors header above 100 MB is refused without reading it") {
  TempDir dir("robust-header");
  const std::string path = dir.file("huge.safetensors");
  const uint64_t length = 100'000'008;
  {
    std::ofstream out(path, std::ios::binary);
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(length >> (8 * i)));
  }
  fs::resize_file(path, 8 + length);  // sparse: no disk is used
  check_mentions(error_of([&] { load_safetensors_metadata(path); }),
                 {"header length 100000008 exceeds the limit of 100000000 bytes"});
}

TEST_CASE("robustness: duplicate keys are refused, naming the key path") {
  check_mentions(error_of([] { models::parse_train_config(R"({"optimizer": {"lr": 0.01, "lr": 100}})"); }),
                 {"duplicate key \"optimizer.lr\""});
  check_mentions(error_of([] { models::parse_train_config(R"({"model": {}, "model": {"layers": 2}})"); }),
                 {"duplicate key \"model\""});
}

TEST_CASE("robustness: keys the family does not read are refused, naming the families that do") {
  check_mentions(error_of([] { models::parse_train_config(R"({"model": {"family": "bigram", "conv_width": 5}})"); }),
                 {"model.conv_width: not used by the bigram family (primer_ez use it)"});
  check_mentions(error_of([] { models::parse_train_config(R"({"model": {"family": "feedback", "dpfp_nu": 2}})"); }),
                 {"model.dpfp_nu: not used by the feedback family (fast_weights use it)"});
  // Every family's own keys round trip, and to_json writes no key of another family.
  for (const char* family : models::kFamilies) {
    INFO(family);
    const TrainConfig c = models::default_config(family);
    CHECK(error_of([&] { models::parse_train_config(models::to_json(c)); }) == "");
  }
}

TEST_CASE("robustness: messages quote long values cut to a readable length") {
  const std::string huge(100000, 'x');
  const std::string message =
      error_of([&] { models::parse_train_config(R"({"model": {"family": ")" + huge + R"("}})"); });
  check_mentions(message, {"model.family", "(100002 characters)"});
  CHECK(message.size() < 400);
  const std::string nested = error_of([] { models::parse_train_config(R"({"model": {"heads": )" + nested_array(60) + "}}"); });
  check_mentions(nested, {"model.heads: expected a positive integer"});
  CHECK(nested.size() < 400);
}

TEST_CASE("robustness: a safetensors header with a huge name and value gives a short message") {
  TempDir dir("robust-long-name");
  std::string header = R"({")" + std::string(100000, 'n') + R"(": {"dtype": ")" + std::string(100000, 'D') +
                       R"(", "shape": [], "data_offsets": [0, 0]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>(uint64_t{header.size()} >> (8 * i));
  std::ofstream(dir.file("long.safetensors"), std::ios::binary) << file << header;
  const std::string message = error_of([&] { load_safetensors(dir.file("long.safetensors")); });
  check_mentions(message, {"unknown or unsupported dtype", "nnnn...", "(100002 characters)"});
  CHECK(message.size() < 400);
}

TEST_CASE("robustness: a config path that is a directory or missing says so") {
  TempDir dir("robust-config");
  check_mentions(error_of([&] { models::load_train_config(dir.path.string()); }), {"is a directory"});
  check_mentions(error_of([&] { models::load_train_config(dir.file("none.json")); }),
                 {"cannot open config file", "No such file or directory"});
}

// ---- before the first step ----------------------------------------------------------------

TEST_CASE("robustness: a prompt outside the vocabulary is refused before the first step") {
  TempDir dir("robust-prompt");
  TrainConfig c = bigram_config(dir.file("run"), 4);
  c.sample.prompt = "It is";  // the text has no capital letters
  Run r(c);
  check_mentions(error_of([&] { r.run(); }), {"sample.prompt \"It is\"", "'I'", "not in the vocabulary"});
  CHECK(r.trainer->step() == 0);
}

TEST_CASE("robustness: a split too short for seq_len names the split") {
  TrainConfig c = bigram_config("unused", 4);
  c.data.seq_len = 64;
  check_mentions(error_of([&] { Run r(c, 300); }),
                 {"the valid split of", "has 30 tokens, too few for data.seq_len 64", "one window needs 65"});
}

TEST_CASE("robustness: a used out_dir needs --resume or --overwrite; a locked one is refused") {
  TempDir dir("robust-outdir");
  const std::string out = dir.file("run");
  Run first(bigram_config(out, 4));
  CHECK(first.run());
  first.trainer.reset();  // releases the lock
  const std::string log_before = read_file(out + "/metrics.jsonl");
  REQUIRE(!log_before.empty());

  // A fresh run is refused and changes nothing.
  Run again(bigram_config(out, 4));
  check_mentions(error_of([&] { again.run(); }),
                 {"already holds a run (a checkpoint at step 4)", "--resume", "--overwrite"});
  CHECK(read_file(out + "/metrics.jsonl") == log_before);
  CHECK(models::latest_checkpoint_step(out) == 4);

  // A resumed run appends to the log, never truncates it.
  {
    Run resumed(bigram_config(out, 6));
    resumed.trainer->resume(out);
    CHECK(resumed.run());
    const std::string log = read_file(out + "/metrics.jsonl");
    CHECK(log.rfind(log_before, 0) == 0);
    CHECK(contains(log, "{\"resumed_at_step\":4}"));
  }
  // --overwrite starts over.
  {
    Run over(bigram_config(out, 2));
    over.trainer->prepare(/*overwrite=*/true);
    CHECK(read_file(out + "/metrics.jsonl").empty());  // started over
    CHECK(models::latest_checkpoint_step(out) == -1);
    CHECK(over.run());
    CHECK(models::latest_checkpoint_step(out) == 2);
  }
  // Two runs at once: the second is refused while the first holds the lock.
  Run holder(bigram_config(dir.file("shared"), 2));
  holder.trainer->prepare();
  Run second(bigram_config(dir.file("shared"), 2));
  const std::string in_use = "is in use by another run (process " + std::to_string(::getpid()) + ")";
  check_mentions(error_of([&] { second.run(); }), {in_use.c_str()});

  // A resume takes the lock before it reads: with out_dir held and its vocabulary
  // gone, it says the directory is in use, not that the vocabulary is missing.
  fs::remove(models::find_checkpoint(out) + "/" + models::kVocabFile);
  {
    Run keeper(bigram_config(out, 2));
    keeper.trainer->lock_out_dir();
    Run reader(bigram_config(out, 6));
    check_mentions(error_of([&] { reader.trainer->resume(out); }), {in_use.c_str()});
  }
  Run reader(bigram_config(out, 6));
  check_mentions(error_of([&] { reader.trainer->resume(out); }), {"cannot open the vocabulary"});
}

TEST_CASE("robustness: an out_dir that cannot be written, or a log among the checkpoints, is refused first") {
  TempDir dir("robust-unwritable");
  std::ofstream(dir.file("a_file")) << "x";
  Run blocked(bigram_config(dir.file("a_file/run"), 2));
  check_mentions(error_of([&] { blocked.run(); }), {"training.out_dir", "cannot create the directory"});
  CHECK(blocked.trainer->step() == 0);

  for (const char* log : {"checkpoint", "checkpoint/model.safetensors", "checkpoint-8/x.jsonl", ".lock"}) {
    INFO(log);
    TrainConfig c = bigram_config(dir.file(std::string("run-") + std::to_string(std::hash<std::string>{}(log))), 2);
    c.training.log = log;
    Run r(c);
    check_mentions(error_of([&] { r.run(); }), {"training.log", "would be written among the checkpoints"});
  }
}

// ---- non-finite values and signals ----------------------------------------------------------

TEST_CASE("robustness: a NaN or exploding loss stops training naming the step; the good checkpoint stays") {
  TempDir dir("robust-diverge");
  const std::string out = dir.file("run");
  Run r(bigram_config(out, 100));
  r.trainer->prepare();
  for (int i = 0; i < 2; ++i) r.trainer->train_step();
  r.trainer->save();
  const NamedTensors good = load_safetensors(out + "/checkpoint/model.safetensors");

  SUBCASE("NaN") {
    {
      NoGradGuard no_grad;
      fill_(r.model->named_parameters().front().second, std::numeric_limits<double>::quiet_NaN());
    }
    check_mentions(error_of([&] { r.trainer->save(); }), {"step 2", "nan", "training diverged",
                                                          "the checkpoint of step 2 is kept"});
    check_mentions(error_of([&] { r.trainer->train_step(); }), {"step 3: the loss is nan", "training diverged"});
  }
  SUBCASE("a finite blow-up") {
    {
      NoGradGuard no_grad;
      const Tensor w = r.model->named_parameters().back().second;
      copy_(w, w * 1e12);
    }
    check_mentions(error_of([&] { r.trainer->train_step(); }), {"step 3: the loss is", "x ln(vocab)",
                                                                "the checkpoint of step 2 is kept"});
  }
  // The checkpoint on disk is the good one, and it loads.
  const NamedTensors after = load_safetensors(out + "/checkpoint/model.safetensors");
  REQUIRE(after.size() == good.size());
  for (size_t i = 0; i < good.size(); ++i) CHECK(after[i].second.to_vector<float>() == good[i].second.to_vector<float>());
  CHECK(models::latest_checkpoint_step(out) == 2);
}

TEST_CASE("robustness: non-finite weights are never saved and never loaded") {
  TempDir dir("robust-nonfinite");
  TinyModule model(Generator(1));
  {
    NoGradGuard no_grad;
    fill_(model.inner.scale, std::numeric_limits<double>::infinity());
  }
  models::Adam adam(model.named_parameters(), models::AdamOptions{}, models::LrSchedule::constant(0.1));
  models::TrainingState state;
  state.step = 1;
  state.vocab = "ab";
  check_mentions(error_of([&] { models::save_checkpoint(dir.path.string(), model, adam, state); }),
                 {"cannot save the checkpoint of step 1", "'inner.scale' holds 4 non-finite values", "inf"});
  CHECK(dir.listing().empty());
  // A file that holds them anyway (written by something else) is refused on load.
  models::save_model(dir.file("bad.safetensors"), model);
  TinyModule fresh(Generator(2));
  check_mentions(error_of([&] { models::load_model(dir.file("bad.safetensors"), fresh); }),
                 {"bad.safetensors", "'inner.scale' holds 4 non-finite values"});
}

TEST_CASE("robustness: a stop request finishes the step, saves and returns") {
  TempDir dir("robust-stop");
  const std::string out = dir.file("run");
  Run r(bigram_config(out, 50));
  std::atomic<bool> stop{true};
  models::RunOptions options;
  options.progress = false;
  options.stop = &stop;
  CHECK(!r.trainer->run(options));
  CHECK(r.trainer->step() == 1);
  CHECK(models::latest_checkpoint_step(out) == 1);
}

// ---- generation and vocabularies -------------------------------------------------------------

TEST_CASE("robustness: generation goes past the context with a sliding window") {
  models::ModelConfig c;
  c.family = "feedback";
  c.vocab = 5;
  c.d_model = 8;
  c.heads = 2;
  c.d_ff = 8;
  c.layers = 1;
  c.max_seq_len = 8;
  std::unique_ptr<models::LanguageModel> model = models::make_model(c);
  model->eval();
  REQUIRE(model->context_length() == 8);
  Generator gen(1);
  const std::vector<int64_t> prompt = {1, 2, 3};
  const std::vector<int64_t> out = models::generate_tokens(*model, prompt, 30, {}, gen);
  REQUIRE(out.size() == 30);
  // Greedy, so each token is the argmax of a forward pass over what the model sees:
  // the whole text while it fits (8 positions), then windows of 4 to 8 of the last tokens.
  NoGradGuard no_grad;
  std::vector<int64_t> text = prompt;
  int64_t window = static_cast<int64_t>(prompt.size());
  for (size_t i = 0; i < out.size(); ++i) {
    INFO("token ", i, " seen through a window of ", window);
    const std::vector<int64_t> seen(text.end() - window, text.end());
    const Tensor logits = model->forward(Tensor::from_vector(seen, {window, 1}));
    const std::vector<float> last = logits.narrow(0, window - 1, 1).reshape({-1}).to_vector<float>();
    CHECK(out[i] == std::max_element(last.begin(), last.end()) - last.begin());
    text.push_back(out[i]);
    window = window == 8 ? 4 : window + 1;
  }
}

TEST_CASE("robustness: the primer_ez family names itself in its messages") {
  models::ModelConfig c;
  c.family = "primer_ez";
  c.vocab = 5;
  c.d_model = 8;
  c.heads = 2;
  c.d_ff = 8;
  c.layers = 1;
  std::unique_ptr<models::LanguageModel> model = models::make_model(c);
  const std::string message = error_of([&] { model->forward(Tensor::zeros({2, 1})); });
  check_mentions(message, {"primer_ez forward: tokens must be int64"});
  CHECK(!contains(message, "transformer"));
  CHECK(model->context_length() == 5000);
}

TEST_CASE("robustness: a vocabulary that is shuffled, duplicated or malformed is refused") {
  CHECK(models::parse_vocab(R"(["\n", " ", "a", "b"])", "").chars() == "\n ab");
  check_mentions(error_of([] { models::parse_vocab(R"(["a", " ", "b"])", "v.json: "); }),
                 {"v.json: ", "not in ascending byte order (entry 1 comes before entry 0)"});
  check_mentions(error_of([] { models::parse_vocab(R"(["a", "a"])", ""); }), {"appears twice"});
  check_mentions(error_of([] { models::parse_vocab(R"(["ab"])", ""); }), {"must be a one-character string"});
  check_mentions(error_of([] { models::parse_vocab(R"({"a": 1})", ""); }), {"must be a JSON list"});
  check_mentions(error_of([] { models::parse_vocab("", ""); }), {"not valid JSON"});
}

}  // namespace loom::test
